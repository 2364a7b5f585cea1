"""One contract, every adapter: the DynamoDB store and SQS broker (on moto) and the
in-memory ones must behave the same, transition by transition."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from conveyor.aws import AwsBackend
from conveyor.errors import Conflict, IdempotencyConflict, NotFound
from conveyor.memory import MemoryBroker, MemoryTaskStore
from conveyor.model import Status, Task, TaskError, WorkerInfo, new_id, now
from conveyor.ports import Claim


@pytest.fixture(params=["dynamodb", "memory"])
def store(request):
    if request.param == "memory":
        return MemoryTaskStore(retention_seconds=3600)
    settings = request.getfixturevalue("settings_factory")(retention_seconds=3600)
    return AwsBackend(settings).store()


@pytest.fixture(params=["sqs", "memory"])
def broker(request):
    if request.param == "memory":
        return MemoryBroker(visibility_timeout=6)
    settings = request.getfixturevalue("settings_factory")()
    return AwsBackend(settings).broker()


def task(task_type: str = "echo", **kw) -> Task:
    return Task(id=new_id(), type=task_type, payload={"x": 1}, **kw)


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
    store.heartbeat(WorkerInfo("w1", "h", 1, now(), now(), 1, 1, "t"), 60)
    assert store.cancel(running.id, now()).cancel_requested
    assert store.heartbeat(WorkerInfo("w1", "h", 1, now(), now(), 1, 1, "t"), 60) == {running.id}
    assert store.heartbeat(WorkerInfo("w1", "h", 1, now(), now(), 1, 1, "t"), 60) == set()


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


def test_workers(store):
    info = WorkerInfo("w9", "host", 7, now(), now(), 2, 8, "0.1")
    store.heartbeat(info, 60)
    assert store.worker("w9").concurrency == 8
    assert [w.id for w in store.workers()] == ["w9"]
    store.remove_worker("w9")
    assert store.worker("w9") is None and store.workers() == []


def test_broker_visibility_semantics(broker):
    broker.send_many([("t1", "echo", 0), ("t2", "echo", 0)])
    got = broker.receive(10, 1)
    assert sorted(m.task_id for m in got) == ["t1", "t2"]
    assert broker.receive(10, 0) == []  # hidden while in flight
    assert broker.depth().in_flight == 2
    broker.change_visibility(got[0].receipt, 0)
    back = broker.receive(10, 1)
    assert [m.task_id for m in back] == [got[0].task_id] and back[0].receive_count == 2
    broker.delete_many([back[0].receipt, got[1].receipt])
    assert broker.depth().total == 0


def test_broker_delay(broker):
    broker.send("t3", "echo", 2)
    assert broker.depth().delayed == 1
    assert broker.receive(1, 0) == []
    time.sleep(2.2)
    assert [m.task_id for m in broker.receive(1, 1)] == ["t3"]


def test_the_whole_engine_runs_on_the_memory_adapters():
    """Above the ports nothing knows AWS: engine and worker run unchanged in memory."""
    from conveyor.bootstrap import Runtime
    from conveyor.engine import Engine, Submission
    from conveyor.registry import RegistryWatcher
    from tests.conftest import EXAMPLES, WorkerThread, make_settings, wait_for

    settings = make_settings(poll_wait_seconds=1)
    engine = Engine(settings, MemoryTaskStore(), MemoryBroker(6), MemoryBroker(6), RegistryWatcher(EXAMPLES))
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
