"""The worker's use of fleet-wide limits on the memory adapters and a fake clock: waits
re-send without counting an attempt, slots are released on every way out of an attempt
and never for another worker's task, the heartbeat keeps a long task's slot, and a
rate-limited task reserves its turn once however often it comes back."""

from __future__ import annotations

import shutil
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import tests.worker.testhandlers  # noqa: F401  (registers the test handlers)
from conveyor.model import QueueDepth, Status, WaitReason
from conveyor.ports import BROKER_MAX_DELAY_SECONDS
from tests.conftest import EXAMPLES
from tests.support.spies import spy
from tests.worker.conftest import Stub
from tests.worker.testhandlers import runs

TYPES = {
    # name: (handler, maxAttempts, limits)
    "one": ("test-count", 3, "concurrency: {max: 1}"),
    "flaky-one": ("test-flaky", 3, "concurrency: {max: 1}"),
    "per-tenant": ("test-count", 3, "concurrency: {max: 1, key: /tenant}"),
    "slow-rate": ("test-count", 3, "rateLimit: {limit: 1, period: 2000}"),
    "both": ("test-count", 3, "concurrency: {max: 1}\nrateLimit: {limit: 5}"),
}


@pytest.fixture
def types(tmp_path: Path) -> Path:
    target = tmp_path / "tasktypes"
    shutil.copytree(EXAMPLES, target)
    for name, (handler, attempts, limits) in TYPES.items():
        limit = limits.replace("\n", "\n" + " " * 18)  # each at the spec's indentation
        (target / f"{name}.yaml").write_text(
            textwrap.dedent(
                f"""\
                apiVersion: conveyor.dev/v1alpha1
                kind: TaskType
                metadata: {{name: {name}}}
                spec:
                  handler: {handler}
                  maxAttempts: {attempts}
                  backoff: {{initialSeconds: 0.2, maxSeconds: 0.5}}
                  {limit}
                """
            )
        )
    return target


@pytest.fixture
def stub(types: Path) -> Iterator[Stub]:
    # A lease longer than any jump of the fake clock below: a jump is not a stalled heartbeat.
    # The 30 s tasks are cancelled at the end rather than waited for.
    world = Stub(types, worker_dead_after_seconds=600, shutdown_grace_seconds=0.2)
    yield world
    world.stop()


# A 30 s task stays in hand, so these wait with ``until``, not ``settle``.


def in_use(stub: Stub, task_type: str, key: str = "") -> int:
    return stub.engine.limits.slots_in_use(task_type, key, stub.clock.now())  # type: ignore[union-attr]


def test_a_task_over_the_limit_waits_without_an_attempt_and_runs_when_the_slot_frees(stub, tmp_path):
    log = tmp_path / "runs"
    first = stub.submit("one", {"log": str(log), "seconds": 30})
    worker = stub.start()
    stub.until(lambda: stub.get(first.id).status is Status.RUNNING)
    second = stub.submit("one", {"log": str(log)})
    # Turned away: queued, no attempt counted, its record says why, its message re-sent delayed.
    waiting = stub.until(lambda: (t := stub.get(second.id)).waiting is not None and t)
    assert waiting.status is Status.QUEUED and waiting.attempts == 0
    assert waiting.waiting.reason is WaitReason.CONCURRENCY
    assert stub.broker.depth().delayed == 1
    assert in_use(stub, "one") == 1
    stub.engine.cancel(first.id)
    stub.finished(first.id)
    stub.until(lambda: in_use(stub, "one") == 0)  # released with the finish
    stub.clock.advance(10)  # the longest wait
    done = stub.finished(second.id)
    assert done.status is Status.SUCCEEDED and done.attempts == 1 and done.waiting is None
    metrics = worker.metrics_registry
    assert metrics.get_sample_value("conveyor_throttled_total", {"type": "one", "reason": "concurrency"}) >= 1
    assert metrics.get_sample_value("conveyor_concurrency_limit", {"type": "one"}) == 1
    assert metrics.get_sample_value("conveyor_concurrency_slots_in_use", {"type": "one"}) == 0


def test_the_waiting_record_is_written_once_however_often_the_task_looks(stub, tmp_path):
    writes = spy(stub.store, "set_waiting")
    first = stub.submit("one", {"log": str(tmp_path / "runs"), "seconds": 30})
    stub.start()
    stub.until(lambda: stub.get(first.id).status is Status.RUNNING)
    second = stub.submit("one", {"log": str(tmp_path / "runs")})
    # Only the runner's message in flight and the re-sent copy delayed: the looked-at
    # copy is deleted (before the clock jumps past its visibility timeout).
    settled = QueueDepth(visible=0, in_flight=1, delayed=1)
    for _ in range(4):  # four looks, each finding the slot taken
        stub.until(lambda: stub.broker.depth() == settled)
        stub.clock.advance(10)
    stub.until(lambda: stub.broker.depth() == settled)
    assert writes.arg(0).count(second.id) == 1
    assert stub.get(second.id).attempts == 0


def test_a_failed_attempt_releases_its_slot_for_the_retry(stub, tmp_path):
    log = tmp_path / "runs"
    task = stub.submit("flaky-one", {"log": str(log), "succeed_on": 2})
    stub.start()
    done = stub.until(lambda: (t := stub.get(task.id)).status is Status.QUEUED and t.attempts == 1 and t)
    stub.until(lambda: in_use(stub, "flaky-one") == 0)
    assert done.error is not None
    stub.clock.advance(1)
    assert stub.finished(task.id).status is Status.SUCCEEDED
    stub.until(lambda: in_use(stub, "flaky-one") == 0)


def test_a_duplicate_message_never_releases_the_running_workers_slot(stub, tmp_path):
    log = tmp_path / "runs"
    task = stub.submit("one", {"log": str(log), "seconds": 30})
    stub.start(worker_id="w-a")
    stub.until(lambda: runs(log))  # running: its handler has started
    stub.broker.send(task.id, "one")  # an at-least-once duplicate, to another worker
    stub.start(worker_id="w-b")
    stub.until(lambda: stub.broker.depth().in_flight == 2)  # the copy on standby
    assert in_use(stub, "one") == 1
    other = stub.submit("one", {"log": str(log)})
    stub.until(lambda: stub.get(other.id).waiting is not None)
    assert stub.get(other.id).status is Status.QUEUED  # the slot is still the runner's
    assert len(runs(log)) == 1


def test_a_duplicate_received_by_the_same_worker_never_releases_the_runners_slot(stub, tmp_path):
    log = tmp_path / "runs"
    task = stub.submit("one", {"log": str(log), "seconds": 30})
    stub.broker.send(task.id, "one")  # a duplicate, received by the same worker in one batch
    stub.start(worker_id="w-a")
    stub.until(lambda: runs(log))  # running: its handler has started
    stub.until(lambda: stub.broker.depth().in_flight == 2)  # the copy on standby
    assert in_use(stub, "one") == 1
    other = stub.submit("one", {"log": str(log)})
    stub.until(lambda: stub.get(other.id).waiting is not None)
    assert stub.get(other.id).status is Status.QUEUED and in_use(stub, "one") == 1
    assert len(runs(log)) == 1


def test_a_lost_slot_is_not_renewed_again_on_every_beat(stub, tmp_path):
    """Once a beat finds a running task's lease gone to another task, later beats leave it
    alone (one warning, no refused write per beat for as long as the task runs)."""
    from conveyor.ports import Lease

    log = tmp_path / "runs"
    task = stub.submit("one", {"log": str(log), "seconds": 30})
    stub.start(worker_id="w-a")
    stub.until(lambda: runs(log))
    limits = stub.engine.limits
    assert limits is not None
    renewals = spy(limits, "renew_slots")
    stub.until(lambda: renewals.calls)  # the heartbeat renews the slot
    # The slot goes to another task (as after a stall longer than the lease).
    limits.release_slot(Lease("one", "", task.id), "w-a")
    now = stub.clock.now()
    assert limits.acquire_slot("one", "", "other", "w-x", 1, now, now + timedelta(seconds=60)).granted
    stub.until(lambda: any(c.result for c in renewals.calls))  # a beat finds it lost
    seen = len(renewals.calls)
    time.sleep(5 * stub.settings.heartbeat_interval)
    assert len(renewals.calls) == seen  # not renewed again
    assert stub.get(task.id).status is Status.RUNNING


def test_the_heartbeat_keeps_a_long_tasks_slot_past_one_lease(types, tmp_path):
    stub = Stub(types, shutdown_grace_seconds=0.2)  # the default lease: 2.15 s here
    try:
        _keeps_its_slot(stub, tmp_path)
    finally:
        stub.stop()


def _keeps_its_slot(stub: Stub, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    task = stub.submit("one", {"log": str(log), "seconds": 30})
    stub.start()
    stub.until(lambda: stub.get(task.id).status is Status.RUNNING)
    lease = stub.settings.worker_dead_after
    for _ in range(round(3 * lease)):  # three leases of fake time, a second at a time
        stub.clock.advance(1)
        time.sleep(4 * stub.settings.heartbeat_interval)  # a few beats renew it meanwhile
    assert in_use(stub, "one") == 1
    other = stub.submit("one", {"log": str(log)})
    stub.until(lambda: stub.get(other.id).waiting is not None)
    assert stub.get(other.id).status is Status.QUEUED


def test_keys_are_separate_limits(stub, tmp_path):
    log = tmp_path / "runs"
    a1 = stub.submit("per-tenant", {"log": str(log), "seconds": 30, "tenant": "a"})
    b1 = stub.submit("per-tenant", {"log": str(log), "seconds": 30, "tenant": "b"})
    stub.start()
    stub.until(lambda: all(stub.get(t.id).status is Status.RUNNING for t in (a1, b1)))
    a2 = stub.submit("per-tenant", {"log": str(log), "tenant": "a"})
    stub.until(lambda: stub.get(a2.id).waiting is not None)
    assert in_use(stub, "per-tenant", "a") == 1 and in_use(stub, "per-tenant", "b") == 1


def test_a_rate_limited_task_reserves_its_turn_once_and_waits_for_it(stub, tmp_path):
    log = tmp_path / "runs"
    reserves = spy(stub.engine.limits, "reserve_rate")
    writes = spy(stub.store, "set_waiting")
    first = stub.submit("slow-rate", {"log": str(log)})
    stub.start()
    assert stub.finished(first.id).status is Status.SUCCEEDED  # the bucket's one token
    second = stub.submit("slow-rate", {"log": str(log)})
    waiting = stub.until(lambda: (t := stub.get(second.id)).waiting is not None and t)
    turn = stub.clock.now() + timedelta(seconds=2000)
    assert waiting.waiting.reason is WaitReason.RATE and waiting.waiting.until == turn
    # 2000 s away: longer than a broker delay, so it comes back twice before its turn and
    # is re-sent each time, holding the same turn.
    left = 2000.0
    while left > 0:
        step = min(BROKER_MAX_DELAY_SECONDS, left)
        assert stub.get(second.id).status is Status.QUEUED
        stub.until(lambda: stub.broker.depth() == QueueDepth(visible=0, in_flight=0, delayed=1))
        stub.clock.advance(step)
        left -= step
    done = stub.finished(second.id)
    assert done.status is Status.SUCCEEDED and done.attempts == 1 and done.waiting is None
    assert done.started_at >= turn
    assert Counter(c.args[0] for c in reserves.calls) == {"slow-rate": 2}  # one per task
    assert writes.arg(0) == [second.id]


def test_without_a_limits_store_a_limited_type_is_held_not_run(tmp_path):
    types = tmp_path / "tasktypes"
    types.mkdir()
    (types / "one.yaml").write_text(
        "apiVersion: conveyor.dev/v1alpha1\nkind: TaskType\nmetadata: {name: one}\n"
        "spec: {handler: test-count, concurrency: {max: 1}}\n"
    )
    world = Stub(types)
    world.engine.limits = None
    try:
        task = world.submit("one", {"log": str(tmp_path / "runs")})
        world.start()
        world.settle(lambda: world.broker.depth().delayed == 1)
        assert world.get(task.id).status is Status.QUEUED and not runs(tmp_path / "runs")
    finally:
        world.stop()


def test_a_store_failure_after_the_slot_gives_the_slot_back(stub, tmp_path):
    from conveyor.errors import Unavailable

    limits = stub.engine.limits
    real = limits.reserve_rate
    failures: list[int] = []

    def flaky_reserve(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise Unavailable("dynamodb UpdateItem: ThrottlingException", 1)
        return real(*args, **kwargs)

    limits.reserve_rate = flaky_reserve  # type: ignore[method-assign]
    task = stub.submit("both", {"log": str(tmp_path / "runs")})
    stub.start()
    stub.until(lambda: failures)
    stub.until(lambda: in_use(stub, "both") == 0)
    assert stub.get(task.id).attempts == 0
    stub.clock.advance(stub.settings.visibility_timeout + 1)  # the message comes back
    assert stub.finished(task.id).status is Status.SUCCEEDED


def test_a_claim_whose_answer_was_lost_runs_holding_its_slot(stub, tmp_path):
    log = tmp_path / "runs"
    task = stub.submit("one", {"log": str(log), "seconds": 30})
    stub.broker.delete_many([m.receipt for m in stub.broker.receive(10, 0)])  # the submit's copy
    # The claim took effect in the store; its answer never reached the worker (and the
    # slot it took was given back with the failed call).
    assert stub.store.claim(task.id, "one", "w-lost", stub.clock.now()).task is not None
    stub.broker.send(task.id, "one")
    stub.start(worker_id="w-lost")
    stub.until(lambda: len(runs(log)) == 1)
    stub.until(lambda: in_use(stub, "one") == 1)
    other = stub.submit("one", {"log": str(log)})
    stub.until(lambda: stub.get(other.id).waiting is not None)


def test_a_type_without_limits_pays_nothing_for_them(stub, tmp_path):
    """docs/TASKTYPES.md: types without fleet-wide limits read and write no limit item."""
    limits = stub.engine.limits
    assert limits is not None
    calls = [spy(limits, name) for name in ("acquire_slot", "renew_slots", "release_slot", "reserve_rate")]
    claims = spy(stub.store, "claim")
    tasks = [stub.submit("echo", {"n": n}) for n in range(3)]
    stub.start()
    assert all(stub.finished(t.id).status is Status.SUCCEEDED for t in tasks)
    assert [c.calls for c in calls] == [[], [], [], []]
    assert len(claims.calls) == 3  # one claim each
