"""One contract, every adapter: the DynamoDB task store and worker registry, the SQS
broker and the S3 blob store (on moto) and the in-memory ones must behave the same,
transition by transition."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from ulid import ULID

from conveyor.aws import AwsBackend
from conveyor.aws.s3 import S3BlobStore
from conveyor.bootstrap import build
from conveyor.engine import Engine, Submission
from conveyor.errors import Conflict, IdempotencyConflict, NotFound
from conveyor.memory import MemoryBlobStore, MemoryBroker, MemoryTaskStore, MemoryWorkerRegistry
from conveyor.model import (
    MAX_DELIVERIES,
    Delivery,
    NotifyState,
    Status,
    Task,
    TaskError,
    WorkerInfo,
    new_id,
    now,
)
from conveyor.ports import BlobInfo, BlobStore, Claim
from tests.conftest import make_settings
from tests.support.engines import memory_engine


@pytest.fixture(params=["dynamodb", "dynamodb-sharded", "memory"])
def store(request):
    if request.param == "memory":
        return MemoryTaskStore(retention_seconds=3600)
    # Sharded: each status over three status-index partitions (conveyor/aws/shards.py).
    shards = 3 if request.param == "dynamodb-sharded" else 1
    settings = request.getfixturevalue("settings_factory")(retention_seconds=3600, status_shards=shards)
    return AwsBackend(settings).store()


@pytest.fixture(params=["sqs", "memory"])
def broker(request):
    if request.param == "memory":
        return MemoryBroker(visibility_timeout=6)
    settings = request.getfixturevalue("settings_factory")()
    return AwsBackend(settings).broker()


@pytest.fixture(params=["dynamodb", "memory"])
def workers(request):
    if request.param == "memory":
        return MemoryWorkerRegistry()
    return AwsBackend(request.getfixturevalue("settings_factory")()).workers()


@pytest.fixture(params=["s3", "memory"])
def blobs(request):
    if request.param == "memory":
        return MemoryBlobStore()
    return AwsBackend(request.getfixturevalue("settings_factory")()).blobs()


@pytest.fixture(params=["aws", "memory"])
def engine(request) -> Engine:
    if request.param == "memory":
        return memory_engine(make_settings())
    return build(request.getfixturevalue("settings_factory")()).engine


def task(task_type: str = "echo", **kw) -> Task:
    return Task(**({"id": new_id(), "type": task_type, "payload": {"x": 1}} | kw))


def test_create_get_and_idempotency(store):
    t = task(idempotency_key="k1")
    assert store.create(t, "h1") == (t, True)
    assert store.get(t.id) == t
    again, created = store.create(task(idempotency_key="k1"), "h1")
    assert again.id == t.id and not created
    with pytest.raises(IdempotencyConflict):
        store.create(task(idempotency_key="k1"), "h2")
    assert store.get("01ARZ3NDEKTSV4RRFFQ69G5FAV") is None


def test_claim_is_exactly_once_under_concurrency(store):
    for _ in range(5):
        t = task()
        store.create(t)
        wins: list[bool] = []
        barrier = threading.Barrier(4)

        def go(n: int, t: Task, wins: list[bool], barrier: threading.Barrier) -> None:
            barrier.wait()
            wins.append(store.claim(t.id, t.type, f"w{n}", now()).task is not None)

        threads = [threading.Thread(target=go, args=(n, t, wins, barrier)) for n in range(4)]
        [th.start() for th in threads]
        [th.join() for th in threads]
        assert sum(wins) == 1
        claimed = store.get(t.id, consistent=True)
        assert claimed.status is Status.RUNNING and claimed.attempts == 1


def test_claim_respects_run_at_and_type(store):
    t = task(run_at=now() + timedelta(hours=1))
    store.create(t)
    refused = store.claim(t.id, t.type, "w", now())
    assert refused.task is None and refused.current.status is Status.QUEUED
    assert store.claim(t.id, "other-type", "w", now() + timedelta(hours=2)).task is None
    assert store.claim(t.id, t.type, "w", now() + timedelta(hours=2)).task is not None
    assert store.claim(new_id(), t.type, "w", now()) == Claim(None, None)  # no such task


def test_only_the_owner_finishes_and_only_once(store):
    t = task()
    store.create(t)
    mine = store.claim(t.id, t.type, "w1", now()).task
    impostor = mine.with_(worker="w2")
    assert store.finish(impostor, Status.SUCCEEDED, now(), result={"no": 1}) is None
    done = store.finish(mine, Status.SUCCEEDED, now(), result={"ok": True})
    assert done.status is Status.SUCCEEDED and done.result == {"ok": True} and done.expires_at
    assert store.finish(mine, Status.FAILED, now(), error=TaskError("E", "m")) is None


def test_a_webhook_is_pending_with_the_finish_and_its_log_is_kept_bounded_and_once(store):
    t = task(notify_url="https://example.com/hook", submitter="ci")
    store.create(t)
    assert store.get(t.id).notify_url == "https://example.com/hook" and store.get(t.id).submitter == "ci"
    mine = store.claim(t.id, t.type, "w1", now()).task
    done = store.finish(mine, Status.SUCCEEDED, now(), result={"ok": 1}, notify=True)
    assert done.notify_state is NotifyState.PENDING
    read = store.get(t.id, consistent=True)
    assert read.notify_state is NotifyState.PENDING and read.deliveries == ()
    first = Delivery(now(), "w-1", 500, 12, "HTTP 500")
    after = store.record_delivery(read, first, NotifyState.PENDING)
    assert after is not None and after.deliveries == (first,)
    # A second worker holding the same read loses: one attempt is recorded once.
    assert store.record_delivery(read, Delivery(now(), "w-1", 200, 3), NotifyState.DELIVERED) is None
    current = store.get(t.id, consistent=True)
    assert current.deliveries == (first,) and current.notify_state is NotifyState.PENDING
    for n in range(MAX_DELIVERIES + 3):
        current = store.record_delivery(
            current, Delivery(now(), "w-1", None, n, "refused"), NotifyState.PENDING
        )
        assert current is not None
    kept = store.get(t.id, consistent=True).deliveries
    assert len(kept) == MAX_DELIVERIES and kept[-1].duration_ms == MAX_DELIVERIES + 2
    # A finish without a webhook leaves no state; a retried task owes no webhook until it ends.
    plain = task()
    store.create(plain)
    claimed = store.claim(plain.id, plain.type, "w1", now()).task
    assert store.finish(claimed, Status.FAILED, now(), error=TaskError("E", "m")).notify_state is None
    assert store.get(plain.id, consistent=True).notify_state is None
    hooked = task(notify_url="https://example.com/hook")
    store.create(hooked)
    claimed = store.claim(hooked.id, hooked.type, "w1", now()).task
    store.finish(claimed, Status.FAILED, now(), error=TaskError("E", "m"), notify=True)
    assert store.retry(hooked.id, now()).notify_state is None
    assert store.get(hooked.id, consistent=True).notify_state is None


def test_a_finish_outside_an_attempt_owes_the_webhook_the_task_or_its_type_names(store):
    # A cancel of a queued task and a fail of an unfinished one mark it pending in the same
    # write when the caller says the type has a webhook, or when the record names its own.
    own = task(notify_url="https://example.com/hook")
    by_type, neither = task(), task()
    for t in (own, by_type, neither):
        store.create(t)
    assert store.cancel(own.id, now()).notify_state is NotifyState.PENDING
    assert store.cancel(by_type.id, now(), notify=True).notify_state is NotifyState.PENDING
    assert store.cancel(neither.id, now()).notify_state is None
    assert store.get(by_type.id, consistent=True).notify_state is NotifyState.PENDING
    own, by_type, neither = task(notify_url="https://example.com/hook"), task(), task()
    for t in (own, by_type, neither):
        store.create(t)
    error = TaskError("WorkerLost", "gone")
    assert store.fail_unfinished(own.id, error, now()).notify_state is NotifyState.PENDING
    assert store.fail_unfinished(by_type.id, error, now(), notify=True).notify_state is NotifyState.PENDING
    assert store.fail_unfinished(neither.id, error, now()).notify_state is None
    assert store.get(own.id, consistent=True).notify_state is NotifyState.PENDING
    assert store.fail_unfinished(own.id, error, now(), notify=True) is None  # already finished


def test_a_success_after_a_retried_attempt_clears_its_error_and_cancel_flag(store):
    t = task()
    store.create(t)
    first = store.claim(t.id, t.type, "w1", now()).task
    store.cancel(t.id, now())  # asked while running: the flag is set
    assert store.get(t.id, consistent=True).cancel_requested
    assert store.requeue(first, now() - timedelta(seconds=1), TaskError("E", "boom"), now())
    again = store.claim(t.id, t.type, "w1", now()).task
    assert again.error == TaskError("E", "boom") and not again.cancel_requested
    done = store.finish(again, Status.SUCCEEDED, now(), result={"n": 2})
    stored = store.get(t.id, consistent=True)
    assert done.status is stored.status is Status.SUCCEEDED
    assert stored.error is None and done.error is None
    assert stored.result == done.result == {"n": 2}
    assert stored.expires_at == done.expires_at and stored.attempts == done.attempts == 2


def test_requeue_take_over_and_fail(store):
    t = task()
    store.create(t)
    first = store.claim(t.id, t.type, "w1", now()).task
    assert store.requeue(first, now() - timedelta(seconds=1), TaskError("E", "boom"), now())
    again = store.claim(t.id, t.type, "w1", now()).task
    assert again.attempts == 2 and again.error == TaskError("E", "boom")
    taken = store.take_over(again, "w2", now())
    assert taken.worker == "w2" and taken.attempts == 3
    assert store.take_over(again, "w3", now()) is None  # the stale view loses
    failed = store.fail_unfinished(t.id, TaskError("DeadLettered", "x"), now())
    assert failed.status is Status.FAILED
    assert store.fail_unfinished(t.id, TaskError("DeadLettered", "x"), now()) is None


def test_cancel_and_retry(store):
    queued = task()
    store.create(queued)
    assert store.cancel(queued.id, now()).status is Status.CANCELLED
    with pytest.raises(Conflict):
        store.cancel(queued.id, now())
    retried = store.retry(queued.id, now())
    assert retried.status is Status.QUEUED and retried.attempts == 0 and retried.error is None
    with pytest.raises(Conflict):
        store.retry(queued.id, now())
    with pytest.raises(NotFound):
        store.cancel("01ARZ3NDEKTSV4RRFFQ69G5FAV", now())
    running = task()
    store.create(running)
    store.claim(running.id, running.type, "w1", now())
    flagged = store.cancel(running.id, now())
    assert flagged.status is Status.RUNNING and flagged.cancel_requested and flagged.worker == "w1"
    assert store.get(running.id, consistent=True).cancel_requested


def test_a_duplicate_create_is_a_lost_answer_retry_or_a_conflict(store):
    t = task()
    assert store.create(t) == (t, True)
    # The same task again: the retry of a write that took effect answers as the first did,
    # with the record as it stands (a worker may have claimed it in between).
    assert store.create(t) == (t, True)
    claimed = store.claim(t.id, t.type, "w1", now()).task
    assert store.create(t) == (claimed, True)
    # Another task under the same id is refused, and the record is left as it was.
    for other in (t.with_(payload={"x": 2}), t.with_(type="other"), t.with_(max_attempts=9)):
        with pytest.raises(Conflict):
            store.create(other)
    assert store.get(t.id, consistent=True) == claimed


def test_queued_before_lists_old_queued_tasks_oldest_first(store):
    def at(seconds_ago: float, **kw) -> Task:
        created = now() - timedelta(seconds=seconds_ago)
        return task(id=str(ULID.from_timestamp(created.timestamp())), created_at=created, **kw)

    oldest, old, running, young = at(3600), at(600), at(1800), at(1)
    for t in (young, old, running, oldest):
        store.create(t)
    store.claim(running.id, running.type, "w", now())
    horizon = now() - timedelta(seconds=300)
    assert [t.id for t in store.queued_before(horizon)] == [oldest.id, old.id]
    assert [t.id for t in store.queued_before(horizon, limit=1)] == [oldest.id]
    assert [t.id for t in store.queued_before(now() + timedelta(seconds=5))] == [oldest.id, old.id, young.id]
    assert store.queued_before(now() - timedelta(hours=2)) == []


def test_a_cancel_request_reaches_its_worker_at_the_next_heartbeat(workers):
    beat = WorkerInfo("w1", "h", 1, now(), now(), 1, 1, "t")
    assert workers.heartbeat(beat, 60) == set()
    workers.request_cancel("w1", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    workers.request_cancel("w1", "01ARZ3NDEKTSV4RRFFQ69G5FAW")
    assert workers.heartbeat(beat, 60) == {"01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAW"}
    assert workers.heartbeat(beat, 60) == set()  # answered once
    # A worker without a record is gone: nothing is kept for it.
    workers.request_cancel("w2", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert workers.worker("w2") is None
    assert workers.heartbeat(WorkerInfo("w2", "h", 2, now(), now(), 0, 1, "t"), 60) == set()


def test_cancelling_a_running_task_tells_its_worker(engine):
    """The task store flags the record; the engine passes the id to the owner's record."""
    submitted, _ = engine.submit(Submission("echo", {}))
    engine.workers.heartbeat(WorkerInfo("w1", "h", 1, now(), now(), 1, 1, "t"), 60)
    assert engine.store.claim(submitted.id, submitted.type, "w1", now()).task is not None
    assert engine.cancel(submitted.id).cancel_requested
    assert engine.workers.heartbeat(WorkerInfo("w1", "h", 1, now(), now(), 1, 1, "t"), 60) == {submitted.id}
    queued, _ = engine.submit(Submission("echo", {}))
    assert engine.cancel(queued.id).status is Status.CANCELLED
    assert engine.workers.heartbeat(WorkerInfo("w1", "h", 1, now(), now(), 1, 1, "t"), 60) == set()


def test_query_filters_and_pages_newest_first(store):
    made = []
    for n in range(5):
        t = task("a" if n % 2 else "b")
        store.create(t)
        made.append(t)
    store.claim(made[0].id, "b", "w", now())
    ids = [t.id for t in store.query(limit=10).items]
    assert ids == [t.id for t in reversed(made)]
    page = store.query(task_type="b", limit=1)
    assert [t.id for t in page.items] == [made[4].id] and page.next_cursor
    rest = store.query(task_type="b", limit=5, cursor=page.next_cursor)
    assert [t.id for t in rest.items] == [made[2].id, made[0].id]
    assert [t.id for t in store.query(Status.RUNNING, "b").items] == [made[0].id]
    counts = store.count_by_status()
    assert counts[Status.QUEUED] == 4 and counts[Status.RUNNING] == 1
    assert store.oldest_queued().id == made[1].id


def test_the_unfiltered_list_pages_newest_first_across_every_status(store):
    # Tasks of all five statuses, interleaved in creation order: every page is newest
    # first, a cursor resumes right after its last task, and none is lost or repeated.
    made = [task("a" if n % 3 else "b") for n in range(23)]
    for t in made:
        store.create(t)
    at = now()
    for n, t in enumerate(made):
        if n % 5 == 0:
            continue  # queued
        claimed = store.claim(t.id, t.type, "w", at).task
        assert claimed is not None
        if n % 5 == 2:
            store.finish(claimed, Status.SUCCEEDED, at)
        elif n % 5 == 3:
            store.finish(claimed, Status.FAILED, at, error=TaskError("E", "m"))
        elif n % 5 == 4:
            store.requeue(claimed, at, TaskError("E", "m"), at)
            store.cancel(t.id, at)
    assert {t.status for t in store.query(limit=50).items} == set(Status)
    for limit in (1, 4, 23, 50):
        seen, cursor = [], None
        while True:
            page = store.query(limit=limit, cursor=cursor)
            assert len(page.items) <= limit
            seen += [t.id for t in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
            assert len(seen) <= len(made)
        assert seen == [t.id for t in reversed(made)]


def test_status_and_type_pages_through_other_types_without_losing_any(store):
    # 3 tasks of "rare" among 250 of "common", all queued: a filtered list must page past
    # the others (over several index pages) and return each rare one exactly once.
    rare = []
    for n in range(253):
        t = task("rare" if n in (5, 130, 251) else "common")
        rare += [t.id] if t.type == "rare" else []
        store.create(t) if n % 50 else store.create_many([t])
    seen, cursor, pages = [], None, 0
    while True:
        page = store.query(Status.QUEUED, "rare", limit=2, cursor=cursor)
        seen += [t.id for t in page.items]
        assert all(t.type == "rare" and t.status is Status.QUEUED for t in page.items)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
        assert pages < 20
    assert seen == list(reversed(rare))
    assert [t.id for t in store.query(task_type="rare", limit=5).items] == list(reversed(rare))
    # A page cut short inside one index page resumes right after its last item.
    first = store.query(Status.QUEUED, "common", limit=3)
    second = store.query(Status.QUEUED, "common", limit=3, cursor=first.next_cursor)
    newest = [t.id for t in store.query(task_type="common", limit=6).items]
    assert [t.id for t in first.items + second.items] == newest
    assert len(store.query(limit=200).items) == 200


def test_workers(workers):
    info = WorkerInfo("w9", "host", 7, now(), now(), 2, 8, "0.1")
    workers.heartbeat(info, 60)
    assert workers.worker("w9") == info
    later = replace(info, in_flight=5, last_heartbeat=now() + timedelta(seconds=1))
    workers.heartbeat(later, 60)
    assert workers.workers() == [later]
    workers.remove_worker("w9")
    assert workers.worker("w9") is None and workers.workers() == []
    workers.remove_worker("w9")  # removing one that is gone is no error


def test_broker_visibility_semantics(broker):
    broker.send_many([("t1", "echo", 0, None), ("t2", "echo", 0, None)])
    got = broker.receive(10, 1)
    assert sorted(m.task_id for m in got) == ["t1", "t2"]
    assert broker.receive(10, 0) == []  # hidden while in flight
    assert broker.depth().in_flight == 2
    broker.change_visibility(got[0].receipt, 0)
    back = broker.receive(10, 1)
    assert [m.task_id for m in back] == [got[0].task_id] and back[0].receive_count == 2
    broker.delete_many([back[0].receipt, got[1].receipt])
    assert broker.depth().total == 0


def test_change_visibility_many_over_a_batch_of_batches(broker):
    """More receipts than one SQS batch call takes (10): every one is changed."""
    broker.send_many([(f"t{n}", "echo", 0, None) for n in range(12)])
    got: list = []
    for _ in range(10):
        got += broker.receive(10, 1)
        if len(got) == 12:
            break
    assert sorted(m.task_id for m in got) == sorted(f"t{n}" for n in range(12))
    keep = got[-1]  # stays hidden: only the others are shown again
    broker.change_visibility_many([(m.receipt, 0) for m in got[:-1]] + [(keep.receipt, 600)])
    back: list = []
    for _ in range(10):
        back += broker.receive(10, 1)
        if len(back) >= 11:
            break
    assert sorted(m.task_id for m in back) == sorted(m.task_id for m in got[:-1])
    assert all(m.receive_count == 2 for m in back)
    assert broker.receive(10, 0) == []


def test_broker_delay(broker):
    broker.send("t3", "echo", 2)
    assert broker.depth().delayed == 1
    assert broker.receive(1, 0) == []
    time.sleep(2.2)
    assert [m.task_id for m in broker.receive(1, 1)] == ["t3"]


def test_the_whole_engine_runs_on_the_memory_adapters():
    """Above the ports nothing knows AWS: engine and worker run unchanged in memory."""
    from conveyor.bootstrap import Runtime
    from conveyor.engine import Submission
    from tests.conftest import WorkerThread, make_settings, wait_for
    from tests.support.engines import memory_engine

    settings = make_settings(poll_wait_seconds=1)
    engine = memory_engine(settings)
    worker = WorkerThread(Runtime(settings, None, engine)).start()  # type: ignore[arg-type]
    try:
        ok, _ = engine.submit(Submission("text-transform", {"text": "a b"}))
        bad, _ = engine.submit(Submission("fail", {"permanent": True}))
        done = wait_for(lambda: (t := engine.get(ok.id)).status.terminal and t)
        assert done.result == {"length": 3, "uppercase": "A B", "word_count": 2}
        assert wait_for(lambda: (t := engine.get(bad.id)).status.terminal and t).status is Status.FAILED
    finally:
        worker.stop()


def test_finish_honours_a_retention_override(store):
    t = task()
    store.create(t)
    mine = store.claim(t.id, t.type, "w1", now()).task
    at = now()
    done = store.finish(mine, Status.SUCCEEDED, at, result=1, retention_seconds=60)
    assert abs(done.expires_at - (at.timestamp() + 60)) <= 1


def test_a_resend_is_claimed_once_under_concurrency(store):
    """What keeps several API replicas' sweepers from each sending an orphan."""
    t = task()
    store.create(t)
    assert [x.id for x in store.queued_before(now() + timedelta(seconds=2))] == [t.id]
    assert store.queued_before(now() - timedelta(hours=1)) == []
    wins: list[bool] = []
    barrier = threading.Barrier(4)

    def go() -> None:
        barrier.wait()
        wins.append(store.mark_redispatched(t, now()))

    threads = [threading.Thread(target=go) for _ in range(4)]
    [th.start() for th in threads]
    [th.join() for th in threads]
    assert sum(wins) == 1
    assert store.mark_redispatched(t, now()) is False  # the copy it was read from is stale
    fresh = store.get(t.id, consistent=True)
    assert fresh.updated_at > t.updated_at and fresh.status is Status.QUEUED
    assert store.claim(t.id, t.type, "w", now()).task is not None
    assert store.mark_redispatched(store.get(t.id, consistent=True), now()) is False  # not queued


def test_schedule_state_only_moves_forward_and_is_never_a_task(store):
    key = "default/nightly"
    assert store.schedule_state(key) is None
    t = task()
    store.create(t)
    slot = now().replace(microsecond=0)
    assert store.advance_schedule(key, slot, t.id, slot)
    # The same slot again, or an older one, does not move it (replicas racing on a slot).
    assert not store.advance_schedule(key, slot, "other")
    assert not store.advance_schedule(key, slot - timedelta(minutes=1), "other")
    state = store.schedule_state(key)
    assert (state.last_slot, state.last_task_id, state.last_run_at) == (slot, t.id, slot)
    # A skipped slot moves the slot but keeps the last task; a trigger records a task only.
    later = slot + timedelta(minutes=1)
    assert store.advance_schedule(key, later)
    trigger_at = later + timedelta(seconds=5)
    store.record_schedule_task(key, "01ARZ3NDEKTSV4RRFFQ69G5FAV", trigger_at)
    state = store.schedule_state(key)
    assert state.last_slot == later and state.last_task_id == "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    assert state.last_run_at == trigger_at
    # Of concurrent writers of one slot, exactly one wins.
    wins: list[bool] = []
    barrier = threading.Barrier(4)
    newest = later + timedelta(minutes=1)

    def go() -> None:
        barrier.wait()
        wins.append(store.advance_schedule(key, newest, new_id(), newest))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(wins) == [False, False, False, True]
    # Never listed, counted or read as a task.
    assert [x.id for x in store.query(limit=50).items] == [t.id]
    assert sum(store.count_by_status().values()) == 1
    assert store.get("schedule#" + key) is None
    assert store.claim("schedule#" + key, "echo", "w", now()).task is None


def missing_bucket(blobs: BlobStore) -> BlobStore:
    if isinstance(blobs, MemoryBlobStore):
        return blobs.for_bucket("no-such-bucket")
    assert isinstance(blobs, S3BlobStore)
    return S3BlobStore(blobs.client, "no-such-bucket")


def test_blobs_put_get_stat_and_exists(blobs):
    blobs.put("a/b.txt", b"hello", "text/plain", metadata={"Owner": "me"})
    assert blobs.get("a/b.txt") == b"hello"
    assert blobs.stat("a/b.txt") == BlobInfo(size=5, metadata={"owner": "me"})  # names lower-cased
    assert blobs.exists("a/b.txt") and not blobs.exists("a/c.txt")
    assert blobs.stat("a/c.txt") is None
    with pytest.raises(NotFound):
        blobs.get("a/c.txt")
    blobs.put("a/b.txt", b"bye")  # overwrite by default
    assert blobs.get("a/b.txt") == b"bye" and blobs.stat("a/b.txt").metadata == {}
    with pytest.raises(Conflict):
        blobs.put("a/b.txt", b"again", overwrite=False)
    assert blobs.get("a/b.txt") == b"bye"
    blobs.put("new.txt", b"first", overwrite=False)
    assert blobs.get("new.txt") == b"first"


def test_blobs_read_at_most_one_byte_over_max_bytes(blobs):
    blobs.put("ten", b"0123456789")
    assert blobs.get("ten", max_bytes=4) == b"01234"
    assert blobs.get("ten", max_bytes=10) == b"0123456789"
    assert blobs.get("ten", max_bytes=100) == b"0123456789"
    with pytest.raises(NotFound):
        blobs.get("none", max_bytes=4)


def test_blobs_in_a_missing_bucket_are_not_found(blobs):
    gone = missing_bucket(blobs)
    for write in (lambda: gone.put("k", b"x"), lambda: gone.upload("k", [b"x"]), lambda: gone.get("k")):
        with pytest.raises(NotFound):
            write()
    assert gone.stat("k") is None and not gone.exists("k")


def test_blobs_upload_in_parts(blobs):
    mib = 1024 * 1024
    chunks = [bytes([n]) * mib for n in range(11)]  # 11 MiB: three parts of (at least) 5 MiB
    assert (
        blobs.upload("big", iter(chunks), "application/x-test", part_size=5 * mib, metadata={"K": "v"})
        == 11 * mib
    )
    assert blobs.get("big") == b"".join(chunks)
    assert blobs.stat("big") == BlobInfo(size=11 * mib, metadata={"k": "v"})
    with pytest.raises(Conflict):
        blobs.upload("big", iter(chunks), part_size=5 * mib, overwrite=False)
    assert blobs.upload("small", [b"ab", b"cd"], overwrite=False) == 4  # fits one part
    with pytest.raises(Conflict):
        blobs.upload("small", [b"x"], overwrite=False)
    assert blobs.get("small") == b"abcd" and blobs.get("big", max_bytes=0) == bytes([0])


def test_progress_is_written_only_by_the_owning_attempt_and_read_in_batches(store):
    from conveyor.model import MAX_EVENTS, Progress, TaskEvent

    t = task()
    store.create(t)
    mine = store.claim(t.id, t.type, "w1", now()).task
    at = now()
    events = [TaskEvent.checked(n, "step", {"n": n}, 1, at) for n in range(1, MAX_EVENTS + 1)]
    assert store.record_progress(mine, Progress.checked(0.25, "a quarter", 1, at), events)
    stored = store.get(t.id, consistent=True)
    assert stored.progress == Progress(0.25, "a quarter", 1, at)
    assert stored.events == tuple(events)
    assert stored.status is Status.RUNNING and stored.updated_at == mine.updated_at  # nothing else moved
    # A stale attempt (taken over) writes nothing.
    taken = store.take_over(mine, "w2", now())
    assert not store.record_progress(mine, Progress.checked(0.9, None, 1, now()), [])
    assert store.get(t.id, consistent=True).progress == Progress(0.25, "a quarter", 1, at)
    assert store.record_progress(taken, None, events[-1:])  # the new owner may clear progress
    assert store.get(t.id, consistent=True).progress is None
    assert store.get(t.id, consistent=True).events == tuple(events[-1:])
    store.finish(taken, Status.FAILED, now(), error=TaskError("E", "x"))
    assert not store.record_progress(taken, Progress.checked(1, None, 2, now()), [])  # finished: no writes
    store.retry(t.id, now())
    assert store.get(t.id, consistent=True).progress is None  # a new run starts from nothing
    # get_many: more ids than one batch, unknown ids and non-task keys left out.
    others = [task() for _ in range(105)]
    store.create_many(others)
    wanted = [o.id for o in others] + [t.id, new_id(), "worker#w1"]
    found = store.get_many(wanted)
    assert set(found) == {o.id for o in others} | {t.id}
    assert found[t.id].events == tuple(events[-1:]) and found[others[0].id] == others[0]


def test_updated_at_reads_as_the_latest_change_and_conditions_on_it_still_hold(store):
    """A claim and a finish move ``updated_at`` (the DynamoDB store derives it from their
    own instants), and the writes conditioned on it still take: failing a task running
    since its claim, and the sweeper's mark on a task queued again."""
    t = task()
    store.create(t)
    started = now() + timedelta(milliseconds=5)
    running = store.claim(t.id, t.type, "w1", started).task
    assert running.updated_at == started == store.get(t.id, consistent=True).updated_at
    failed = store.fail_unfinished(t.id, TaskError("WorkerLost", "gone"), started + timedelta(seconds=1))
    assert failed is not None and failed.status is Status.FAILED
    assert store.get(t.id, consistent=True).updated_at == failed.finished_at

    t2 = task()
    store.create(t2)
    first = store.claim(t2.id, t2.type, "w1", now()).task
    requeued_at = now() + timedelta(milliseconds=10)
    assert store.requeue(first, now() - timedelta(seconds=1), TaskError("E", "boom"), requeued_at)
    queued = store.get(t2.id, consistent=True)
    assert queued.updated_at == requeued_at
    assert store.mark_redispatched(queued, now() + timedelta(milliseconds=20))
    again = store.claim(t2.id, t2.type, "w1", now() + timedelta(milliseconds=30)).task
    finished_at = now() + timedelta(milliseconds=40)
    done = store.finish(again, Status.SUCCEEDED, finished_at)
    assert done.updated_at == finished_at == store.get(t2.id, consistent=True).updated_at
