"""Unique keys: the lock a create takes with its task, on DynamoDB (moto) and in memory,
and the engine's three strategies over it. One contract for both adapters."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.aws import AwsBackend
from conveyor.bootstrap import build
from conveyor.engine import Engine, Submission
from conveyor.errors import Duplicate, IdempotencyConflict, ValidationError
from conveyor.flowkeys import digest
from conveyor.memory import MemoryTaskStore
from conveyor.model import NotifyState, Status, Task, TaskError, new_id, now
from conveyor.ports import TaskStore, UniqueLock, unique_lock_id
from conveyor.settings import Settings
from tests.conftest import make_settings
from tests.support.engines import memory_engine
from tests.support.unique import unique_types

LOCK = UniqueLock(unique_lock_id("echo", digest("k")), expires_at=2_000_000_000)


@pytest.fixture(params=["dynamodb", "memory"])
def store(request) -> TaskStore:
    if request.param == "memory":
        return MemoryTaskStore(retention_seconds=3600)
    settings = request.getfixturevalue("settings_factory")(retention_seconds=3600)
    return AwsBackend(settings).store()


def task(**kw) -> Task:
    return Task(**({"id": new_id(), "type": "echo", "payload": {"x": 1}, "unique_key": "k"} | kw))


@pytest.fixture(params=["aws", "memory"])
def engine(request, tmp_path: Path) -> Engine:
    types = str(unique_types(tmp_path))
    if request.param == "memory":
        return memory_engine(make_settings(tasktypes=types), types)
    factory: Callable[..., Settings] = request.getfixturevalue("settings_factory")
    return build(factory(tasktypes=types)).engine


@pytest.fixture
def mem_engine(tmp_path: Path) -> Engine:
    types = str(unique_types(tmp_path))
    return memory_engine(make_settings(tasktypes=types), types)


# -- the store ---------------------------------------------------------------------------


def test_a_held_lock_refuses_a_second_create_and_writes_nothing(store):
    first, second = task(), task()
    assert store.create(first, None, LOCK) == (first, True)
    with pytest.raises(Duplicate) as held:
        store.create(second, None, LOCK)
    assert held.value.existing == first.id
    assert store.get(second.id, consistent=True) is None
    # Another key, or another type with the same key, is another lock.
    other = task()
    assert store.create(other, None, UniqueLock(unique_lock_id("echo", digest("k2")), 2_000_000_000))[1]
    assert store.create(task(type="plain"), None, UniqueLock(unique_lock_id("plain", digest("k")), 1))[1]


def test_a_lock_is_taken_over_only_from_the_holder_named(store):
    first, second, third = task(), task(), task()
    store.create(first, None, LOCK)
    with pytest.raises(Duplicate) as held:  # a stale read: it names a holder that is not
        store.create(second, None, UniqueLock(LOCK.id, LOCK.expires_at, take_from=new_id()))
    assert held.value.existing == first.id
    assert store.create(second, None, UniqueLock(LOCK.id, LOCK.expires_at, take_from=first.id))[1]
    # Two callers that read the same old holder: only the first takes the lock.
    with pytest.raises(Duplicate) as held:
        store.create(third, None, UniqueLock(LOCK.id, LOCK.expires_at, take_from=first.id))
    assert held.value.existing == second.id
    assert store.get(third.id, consistent=True) is None


def test_replace_cancels_the_queued_holder_in_the_same_step(store):
    first, second = task(notify_url="https://example.com/hook"), task()
    store.create(first, None, LOCK)
    lock = UniqueLock(LOCK.id, LOCK.expires_at, take_from=first.id, cancel=True, notify=True)
    assert store.create(second, None, lock) == (second, True)
    old = store.get(first.id, consistent=True)
    assert old.status is Status.CANCELLED and old.finished_at == second.created_at
    assert old.notify_state is NotifyState.PENDING and old.expires_at is not None


def test_replace_of_a_holder_no_longer_queued_writes_nothing(store):
    first, second = task(), task()
    store.create(first, None, LOCK)
    running = store.claim(first.id, "echo", "w1", now()).task
    assert running is not None
    lock = UniqueLock(LOCK.id, LOCK.expires_at, take_from=first.id, cancel=True)
    with pytest.raises(Duplicate) as held:
        store.create(second, None, lock)
    assert held.value.existing == first.id
    assert store.get(second.id, consistent=True) is None
    assert store.get(first.id, consistent=True).status is Status.RUNNING


def test_idempotency_is_checked_before_the_lock(store):
    first = task(idempotency_key="idem-1")
    store.create(first, "h", LOCK)
    holder = task()
    store.create(holder, None, UniqueLock(LOCK.id, LOCK.expires_at, take_from=first.id))
    # The repeat gets its own task back, although another task holds the key now.
    assert store.create(task(idempotency_key="idem-1"), "h", LOCK) == (first, False)
    with pytest.raises(IdempotencyConflict):
        store.create(task(idempotency_key="idem-1"), "other", LOCK)


def test_a_retried_create_that_took_effect_is_not_its_own_duplicate(store):
    first = task()
    store.create(first, None, LOCK)
    assert store.create(first, None, LOCK) == (first, True)


def test_lock_items_are_never_tasks(store):
    store.create(task(), None, LOCK)
    assert store.get(LOCK.id) is None
    assert len(store.query(limit=50).items) == 1
    assert sum(store.count_by_status().values()) == 1


def test_many_threads_creating_with_one_key_leave_one_holder(store):
    tasks = [task() for _ in range(12)]
    won: list[Task] = []
    held: list[str] = []
    barrier = threading.Barrier(len(tasks))

    def create(t: Task) -> None:
        barrier.wait()
        try:
            won.append(store.create(t, None, LOCK)[0])
        except Duplicate as exc:
            held.append(exc.existing)

    threads = [threading.Thread(target=create, args=(t,)) for t in tasks]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert len(won) == 1 and len(held) == len(tasks) - 1
    assert set(held) == {won[0].id}
    assert [t.id for t in store.query(limit=50).items] == [won[0].id]


# -- the engine -----------------------------------------------------------------------------


def submit(engine: Engine, task_type: str, payload: dict, **kw) -> tuple[Task, bool]:
    return engine.submit(Submission(type=task_type, payload=payload, **kw))


def test_return_existing_answers_the_active_task_until_it_runs(engine):
    first, created = submit(engine, "latest", {"user": "ada", "n": 1})
    # A key from the payload is not copied onto the record (payloads may be personal data).
    assert created and first.unique_key is None
    again, created = submit(engine, "latest", {"user": "ada", "n": 2})
    assert (again.id, created) == (first.id, False)
    other, created = submit(engine, "latest", {"user": "bob"})
    assert created and other.id != first.id
    # while: queued (the default): once it runs, the key is free again.
    assert engine.store.claim(first.id, "latest", "w1", now()).task is not None
    fresh, created = submit(engine, "latest", {"user": "ada", "n": 3})
    assert created and fresh.id != first.id


def test_reject_holds_while_queued_or_running_and_frees_at_the_end(engine):
    first, _ = submit(engine, "once", {"user": "ada"})
    with pytest.raises(Duplicate) as held:
        submit(engine, "once", {"user": "ada"})
    assert held.value.existing == first.id
    claimed = engine.store.claim(first.id, "once", "w1", now()).task
    with pytest.raises(Duplicate):
        submit(engine, "once", {"user": "ada"})
    engine.store.finish(claimed, Status.SUCCEEDED, now())
    second, created = submit(engine, "once", {"user": "ada"})
    assert created and second.id != first.id


def test_replace_cancels_the_queued_one_and_keeps_the_new_payload(engine):
    first, _ = submit(engine, "debounce", {"user": "ada", "v": 1})
    second, created = submit(engine, "debounce", {"user": "ada", "v": 2}, delay_seconds=60)
    assert created and second.payload == {"user": "ada", "v": 2} and second.run_at is not None
    assert engine.get(first.id).status is Status.CANCELLED
    assert [t.id for t in engine.query(status=Status.QUEUED).items] == [second.id]


def test_a_cancelled_holder_frees_the_key(engine):
    first, _ = submit(engine, "once", {"user": "ada"})
    engine.cancel(first.id)
    assert submit(engine, "once", {"user": "ada"})[1]


def test_a_type_without_uniqueness_is_unique_by_a_given_unique_key(engine):
    first, created = submit(engine, "plain", {}, unique_key="nightly")
    assert created and first.unique_key == "nightly"
    assert submit(engine, "plain", {}, unique_key="nightly") == (engine.get(first.id), False)
    assert submit(engine, "plain", {})[1]  # and without one, not unique at all
    assert submit(engine, "plain", {})[1]


def test_the_submitted_unique_key_wins_over_the_payload_field(engine):
    first, _ = submit(engine, "latest", {"user": "ada"}, unique_key="team-1")
    assert first.unique_key == "team-1"
    assert submit(engine, "latest", {"user": "bob"}, unique_key="team-1")[0].id == first.id
    # One namespace per type: a payload value equal to a given key is that key.
    assert submit(engine, "latest", {"user": "team-1"})[0].id == first.id
    assert submit(engine, "latest", {"user": "team-2"})[1]


def test_a_type_unique_without_a_key_holds_one_active_task(engine):
    first, _ = submit(engine, "single", {"a": 1})
    with pytest.raises(Duplicate):
        submit(engine, "single", {"b": 2})
    assert first.unique_key is None


def test_keys_are_canonical_json_of_the_payload_value(mem_engine):
    # flowkeys.key_of: a string as itself, anything else as its JSON, so 7 is the key "7".
    first = submit(mem_engine, "latest", {"user": 7})[0]
    assert submit(mem_engine, "latest", {"user": "7"})[0].id == first.id
    assert submit(mem_engine, "latest", {"user": 7, "other": 1}, unique_key="7")[0].id == first.id
    assert submit(mem_engine, "latest", {"user": {"b": 1, "a": 2}})[1]
    assert not submit(mem_engine, "latest", {"user": {"a": 2, "b": 1}})[1]
    assert submit(mem_engine, "latest", {"user": [1, 2]})[1]


def test_a_payload_without_the_key_field_is_refused_naming_it(mem_engine):
    with pytest.raises(ValidationError) as bad:
        submit(mem_engine, "latest", {"name": "ada"})
    assert bad.value.errors[0]["pointer"] == "/payload/user"
    assert mem_engine.query().items == []


def test_a_batch_refuses_unique_tasks_naming_the_item(mem_engine):
    with pytest.raises(ValidationError) as bad:
        mem_engine.submit_batch([Submission("plain", {}), Submission("latest", {"user": "ada"})])
    assert bad.value.errors[0]["pointer"] == "/tasks/1/type"
    with pytest.raises(ValidationError) as bad:
        mem_engine.submit_batch([Submission("plain", {}, unique_key="k")])
    assert bad.value.errors[0]["pointer"] == "/tasks/0/unique_key"
    assert mem_engine.query().items == []


def test_a_duplicate_sends_no_message_and_an_idempotent_repeat_still_does(mem_engine):
    submit(mem_engine, "latest", {"user": "ada"})
    submit(mem_engine, "latest", {"user": "ada"})
    assert mem_engine.broker.depth().total == 1
    mem_engine.submit(Submission("latest", {"user": "bob"}), "idem", {"b": 1})
    mem_engine.submit(Submission("latest", {"user": "bob"}), "idem", {"b": 1})
    assert mem_engine.broker.depth().total == 3


def test_concurrent_submits_with_one_key_leave_one_active_task(engine):
    results: list[tuple[Task, bool]] = []
    barrier = threading.Barrier(10)

    def go() -> None:
        barrier.wait()
        results.append(submit(engine, "latest", {"user": "ada"}))

    threads = [threading.Thread(target=go) for _ in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert sum(created for _, created in results) == 1
    assert len({t.id for t, _ in results}) == 1
    assert len(engine.query(status=Status.QUEUED).items) == 1


def test_concurrent_replaces_leave_one_queued_task(engine):
    errors: list[Exception] = []
    barrier = threading.Barrier(8)

    def go(n: int) -> None:
        barrier.wait()
        try:
            submit(engine, "debounce", {"user": "ada", "n": n})
        except Exception as exc:  # any error fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert errors == []
    tasks = engine.query(limit=50).items
    assert len(tasks) == 8
    assert [t.status for t in tasks].count(Status.QUEUED) == 1


def test_a_retry_takes_the_key_back_only_from_a_holder_no_longer_named(store):
    first, second = task(), task()
    store.create(first, None, LOCK)
    store.cancel(first.id, now())
    store.create(second, None, UniqueLock(LOCK.id, LOCK.expires_at, take_from=first.id))
    with pytest.raises(Duplicate) as held:
        store.retry(first.id, now(), LOCK)
    assert held.value.existing == second.id
    assert store.get(first.id, consistent=True).status is Status.CANCELLED
    store.cancel(second.id, now())
    again = store.retry(first.id, now(), UniqueLock(LOCK.id, LOCK.expires_at, take_from=second.id))
    assert again.status is Status.QUEUED and again.attempts == 0
    with pytest.raises(Duplicate) as held:  # the key is the retried task's again
        store.create(task(), None, LOCK)
    assert held.value.existing == first.id


def test_a_retried_unique_task_waits_for_the_active_holder(engine):
    first, _ = submit(engine, "once", {"user": "ada"})
    engine.cancel(first.id)
    second, _ = submit(engine, "once", {"user": "ada"})
    with pytest.raises(Duplicate) as held:
        engine.retry(first.id)
    assert held.value.existing == second.id
    assert engine.get(first.id).status is Status.CANCELLED
    engine.cancel(second.id)
    assert engine.retry(first.id).status is Status.QUEUED
    with pytest.raises(Duplicate) as held:
        submit(engine, "once", {"user": "ada"})
    assert held.value.existing == first.id


def test_while_queued_ends_at_the_first_start_even_if_the_attempt_is_retried(mem_engine):
    first, _ = submit(mem_engine, "latest", {"user": "ada"})
    claimed = mem_engine.store.claim(first.id, "latest", "w1", now()).task
    second, created = submit(mem_engine, "latest", {"user": "ada"})
    assert created
    # The first attempt failed and waits for its next one: it does not take the key back.
    assert mem_engine.store.requeue(claimed, now(), TaskError("E", "x"), now())
    assert mem_engine.get(first.id).status is Status.QUEUED
    assert submit(mem_engine, "latest", {"user": "ada"})[0].id == second.id
    # A holder queued again after it started is not active either: the key goes to a new task.
    held = mem_engine.store.claim(second.id, "latest", "w1", now()).task
    assert mem_engine.store.requeue(held, now(), TaskError("E", "x"), now())
    third, created = submit(mem_engine, "latest", {"user": "ada"})
    assert created and third.id not in (first.id, second.id)


def test_a_transaction_that_meets_a_concurrent_one_is_tried_again(settings_factory, monkeypatch):
    """DynamoDB cancels a transaction that overlaps another on one of its items
    (TransactionConflict, nothing written): the create tries again, briefly, and only an
    ongoing clash becomes a 503."""
    from botocore.exceptions import ClientError

    from conveyor.errors import Unavailable

    store = AwsBackend(settings_factory()).store()
    real = store.client.transact_write_items
    clashes = [2]

    def clashing(**kw):
        if clashes[0]:
            clashes[0] -= 1
            reasons = [{"Code": "None"}, {"Code": "TransactionConflict", "Message": "clash"}]
            error = {"Code": "TransactionCanceledException", "Message": "cancelled"}
            raise ClientError({"Error": error, "CancellationReasons": reasons}, "TransactWriteItems")
        return real(**kw)

    monkeypatch.setattr(store.client, "transact_write_items", clashing)
    first = task()
    assert store.create(first, None, LOCK) == (first, True)
    assert clashes == [0]
    clashes[0] = 99
    with pytest.raises(Unavailable):
        store.create(task(), None, UniqueLock(LOCK.id, LOCK.expires_at, take_from=first.id))
