"""One contract for fleet-wide flow control, run against DynamoDB (the moto server) and
memory: concurrency leases (acquire, expiry, renewal, release), GCRA rate reservations,
and the task's ``waiting`` record."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from conveyor.aws import AwsBackend
from conveyor.memory import MemoryFlowLimits, MemoryTaskStore
from conveyor.model import Status, Task, Waiting, WaitReason, new_id, now
from conveyor.ports import FlowLimits, Lease, SlotAnswer

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LEASE = timedelta(seconds=10)


@pytest.fixture(params=["dynamodb", "memory"])
def limits(request) -> FlowLimits:
    if request.param == "memory":
        return MemoryFlowLimits()
    return AwsBackend(request.getfixturevalue("settings_factory")()).limits()


@pytest.fixture(params=["dynamodb", "memory"])
def store(request):
    if request.param == "memory":
        return MemoryTaskStore(retention_seconds=3600)
    return AwsBackend(request.getfixturevalue("settings_factory")(retention_seconds=3600)).store()


def acquire(
    limits: FlowLimits, task_id: str, worker: str = "w1", at: datetime = T0, key: str = "", max_slots=2
):
    return limits.acquire_slot("resize", key, task_id, worker, max_slots, at, at + LEASE)


def test_slots_up_to_the_limit_then_refused_and_freed_by_release(limits):
    assert acquire(limits, "a") == SlotAnswer(True, 1)
    assert acquire(limits, "b", "w2") == SlotAnswer(True, 2)
    assert acquire(limits, "c") == SlotAnswer(False, 2)
    # A second acquire for a task this worker holds is a renewal, not another slot.
    assert acquire(limits, "a") == SlotAnswer(True, 2)
    assert limits.slots_in_use("resize", "", T0) == 2
    limits.release_slot(Lease("resize", "", "a"), "w1")
    assert acquire(limits, "c") == SlotAnswer(True, 2)
    # Keys are separate limits; so are types.
    assert acquire(limits, "d", key="tenant-b") == SlotAnswer(True, 1)
    assert limits.acquire_slot("other", "", "e", "w1", 1, T0, T0 + LEASE).granted


def test_a_task_held_by_another_worker_is_not_taken_while_its_lease_lives(limits):
    assert acquire(limits, "a", "w1").granted
    assert acquire(limits, "a", "w2") == SlotAnswer(False, 1)
    # The lease over (its worker died): the next acquire takes it, as a take-over does.
    assert acquire(limits, "a", "w2", at=T0 + LEASE + timedelta(seconds=1)) == SlotAnswer(True, 1)


def test_expired_leases_free_their_slots(limits):
    assert acquire(limits, "a").granted and acquire(limits, "b").granted
    assert not acquire(limits, "c", at=T0 + timedelta(seconds=9)).granted
    later = T0 + LEASE + timedelta(milliseconds=1)
    assert limits.slots_in_use("resize", "", later) == 0
    assert acquire(limits, "c", at=later) == SlotAnswer(True, 1)
    assert acquire(limits, "d", at=later) == SlotAnswer(True, 2)
    assert not acquire(limits, "e", at=later).granted


def test_renewal_keeps_a_lease_and_reports_the_ones_lost(limits):
    assert acquire(limits, "a").granted and acquire(limits, "b", "w2").granted
    held = [Lease("resize", "", "a"), Lease("resize", "", "b"), Lease("resize", "", "gone")]
    lost = limits.renew_slots(held, "w1", T0 + timedelta(seconds=30))
    assert lost == [Lease("resize", "", "b"), Lease("resize", "", "gone")]
    at = T0 + timedelta(seconds=20)  # past b's lease, within a's renewed one
    assert limits.slots_in_use("resize", "", at) == 1
    assert acquire(limits, "c", "w3", at=at).granted
    assert not acquire(limits, "d", "w3", at=at).granted


def test_release_frees_only_the_releasing_workers_own_slot(limits):
    assert acquire(limits, "a", "w1").granted
    limits.release_slot(Lease("resize", "", "a"), "w2")  # a worker that lost the task
    assert limits.slots_in_use("resize", "", T0) == 1
    limits.release_slot(Lease("resize", "", "a"), "w1")
    limits.release_slot(Lease("resize", "", "a"), "w1")  # twice: nothing more happens
    limits.release_slot(Lease("resize", "never", "x"), "w1")  # a limit never used
    assert limits.slots_in_use("resize", "", T0) == 0


def test_concurrent_acquires_never_exceed_the_limit(limits):
    # Expired leases force the read-and-prune path on every thread at once.
    for n in range(3):
        assert acquire(limits, f"old{n}", max_slots=3).granted
    later = T0 + LEASE + timedelta(seconds=1)
    granted: list[bool] = []
    barrier = threading.Barrier(8)

    def go(n: int) -> None:
        barrier.wait()
        granted.append(acquire(limits, f"t{n}", f"w{n}", at=later, max_slots=3).granted)

    threads = [threading.Thread(target=go, args=(n,)) for n in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(granted) == 3
    assert limits.slots_in_use("resize", "", later) == 3


def test_rate_reservations_follow_gcra(limits):
    # 2 per second with a burst of 3: three starts now, then one every 500 ms.
    starts = [limits.reserve_rate("mail", "", 0.5, 3, T0) for _ in range(6)]
    assert starts == [
        T0,
        T0,
        T0,
        T0 + timedelta(seconds=0.5),
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=1.5),
    ]
    # Later, the bucket has refilled by what time gave it, up to its capacity.
    later = T0 + timedelta(seconds=10)
    assert [limits.reserve_rate("mail", "", 0.5, 3, later) for _ in range(4)] == [
        later,
        later,
        later,
        later + timedelta(seconds=0.5),
    ]
    assert limits.reserve_rate("mail", "other-key", 0.5, 3, T0) == T0


def test_concurrent_reservations_are_each_a_distinct_turn(limits):
    starts: list[datetime] = []
    barrier = threading.Barrier(6)

    def go() -> None:
        barrier.wait()
        for _ in range(5):
            starts.append(limits.reserve_rate("mail", "", 0.1, 1, T0))

    threads = [threading.Thread(target=go) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(starts) == [T0 + timedelta(seconds=0.1 * n) for n in range(30)]


def test_two_adapters_over_one_store_share_the_limits(request):
    # Two workers' adapters: each must see the other's writes (no cache may hide them).
    settings = request.getfixturevalue("settings_factory")()
    one, two = AwsBackend(settings).limits(), AwsBackend(settings).limits()
    assert one.reserve_rate("mail", "", 1.0, 1, T0) == T0
    assert two.reserve_rate("mail", "", 1.0, 1, T0) == T0 + timedelta(seconds=1)
    assert one.reserve_rate("mail", "", 1.0, 1, T0) == T0 + timedelta(seconds=2)
    assert acquire(one, "a", max_slots=1).granted
    assert not acquire(two, "b", "w2", max_slots=1).granted


def test_waiting_is_set_only_on_a_queued_task_and_the_claim_clears_it(store):
    task = Task(id=new_id(), type="echo", payload={})
    store.create(task)
    waiting = Waiting(WaitReason.RATE, T0 + timedelta(seconds=5))
    assert store.set_waiting(task.id, waiting, T0)
    assert store.get(task.id, consistent=True).waiting == waiting
    assert store.set_waiting(task.id, None, T0)
    assert store.get(task.id, consistent=True).waiting is None
    assert store.set_waiting(task.id, Waiting(WaitReason.CONCURRENCY, T0), T0)
    claimed = store.claim(task.id, "echo", "w1", T0 + timedelta(seconds=1)).task
    assert claimed is not None and claimed.waiting is None
    assert store.get(task.id, consistent=True).waiting is None
    # Running now: a late waiting write from another worker's copy does not land.
    assert not store.set_waiting(task.id, waiting, T0)
    assert store.get(task.id, consistent=True).status is Status.RUNNING
    assert store.get(task.id, consistent=True).waiting is None
    assert not store.set_waiting(new_id(), waiting, T0)  # no such task


def test_concurrent_acquires_on_a_new_limit_never_exceed_it(limits):
    # A new item (created by the first writer) and the fast and pruning paths all racing.
    for round_ in range(15):
        key = f"new-{round_}"
        granted: list[bool] = []
        barrier = threading.Barrier(10)

        def go(n: int, key: str = key, granted: list[bool] = granted, barrier=barrier) -> None:
            barrier.wait()
            granted.append(acquire(limits, f"t{n}", f"w{n}", key=key).granted)

        threads = [threading.Thread(target=go, args=(n,)) for n in range(10)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert sum(granted) == 2 == limits.slots_in_use("resize", key, T0), round_


@pytest.mark.parametrize("racing", ["acquire", "renew", "release"])
def test_a_pruning_write_never_undoes_a_write_between_its_read_and_its_write(settings_factory, racing):
    """DynamoDB only (memory has one lock): the slow path takes the item a refused write
    found, then writes the whole map back. Any write in between -- an acquire on the fast
    path, a renewal, a release -- must make that write-back fail and look again, or it
    would lose that write."""
    settings = settings_factory()
    slow, other = AwsBackend(settings).limits(), AwsBackend(settings).limits()
    assert acquire(other, "stale", "w9", max_slots=3).granted  # expires: forces the slow path
    assert acquire(other, "b", "w2", at=T0 + timedelta(seconds=8), max_slots=3).granted
    assert acquire(other, "c", "w3", at=T0 + timedelta(seconds=8), max_slots=3).granted
    at = T0 + timedelta(seconds=11)  # stale's lease is over; b and c live until 18 s
    real_update = slow.client.update_item
    done: list[bool] = []

    def refused_then_race(**kw):
        try:
            return real_update(**kw)
        except ClientError:
            if done:
                raise
            done.append(True)
            if racing == "acquire":
                other.release_slot(Lease("resize", "", "c"), "w3")
                assert acquire(other, "d", "w4", at=at, max_slots=3).granted
            elif racing == "renew":
                assert other.renew_slots([Lease("resize", "", "b")], "w2", T0 + timedelta(seconds=60)) == []
            else:
                other.release_slot(Lease("resize", "", "b"), "w2")
            raise

    slow.client.update_item = refused_then_race  # type: ignore[method-assign]
    assert slow.acquire_slot("resize", "", "e", "w5", 3, at, at + LEASE).granted
    later = T0 + timedelta(seconds=19)  # past b's first lease, within its renewal
    if racing == "acquire":
        assert other.slots_in_use("resize", "", at) == 3  # b, d, e: d was not lost
        assert not acquire(other, "f", "w6", at=at, max_slots=3).granted
    elif racing == "renew":
        assert other.slots_in_use("resize", "", later) == 2  # b's renewal kept, and e
    else:
        assert other.slots_in_use("resize", "", at) == 2  # c and e: b stays released


def test_a_cancelled_task_no_longer_waits(store):
    task = Task(id=new_id(), type="echo", payload={})
    store.create(task)
    at = now()  # a cancelled record expires a retention after: not in the past
    assert store.set_waiting(task.id, Waiting(WaitReason.CONCURRENCY, at), at)
    cancelled = store.cancel(task.id, at, notify=True)
    assert cancelled.status is Status.CANCELLED and cancelled.waiting is None
    assert store.get(task.id, consistent=True).waiting is None


def test_the_services_get_the_shared_store_not_a_per_process_one(settings_factory):
    from conveyor.aws.limits import DynamoFlowLimits
    from conveyor.bootstrap import build

    # A memory adapter would give every worker process its own limits.
    assert isinstance(build(settings_factory()).engine.limits, DynamoFlowLimits)
