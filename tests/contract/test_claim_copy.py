"""A task message carries a copy of the task as created, and a claim may rest on it: the
DynamoDB store then writes the claim conditioned on the record still being that copy and
reads nothing back. Every store must answer such a claim exactly as a claim by id would,
and never with a copy the record does not match."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from conveyor.aws import AwsBackend
from conveyor.memory import MemoryBroker, MemoryTaskStore
from conveyor.model import (
    MAX_COPY_BYTES,
    Priority,
    Status,
    Task,
    TaskCopy,
    TaskError,
    decode_message,
    encode_message,
    new_id,
    now,
    task_from_copy,
)


@pytest.fixture(params=["dynamodb", "memory"])
def store(request):
    if request.param == "memory":
        return MemoryTaskStore(retention_seconds=3600)
    return AwsBackend(request.getfixturevalue("settings_factory")(retention_seconds=3600)).store()


@pytest.fixture(params=["sqs", "memory"])
def broker(request):
    if request.param == "memory":
        return MemoryBroker(visibility_timeout=6)
    return AwsBackend(request.getfixturevalue("settings_factory")()).broker()


def _task(**changes) -> Task:
    at = now()
    task = Task(
        id=new_id(),
        type="echo",
        payload={"n": 1, "text": "héllo", "nested": [1.5, None, True]},
        max_attempts=4,
        created_at=at - timedelta(seconds=5),
        updated_at=at - timedelta(seconds=5),
        run_at=at - timedelta(seconds=1),
        submitter_scopes=frozenset({"tasks:write", "tasks:read"}),
        submitter="ci",
        notify_url="https://hooks.example/done",
        idempotency_key=f"k-{new_id()}",
        priority=Priority.HIGH,
        unique_key="u-1",
    )
    return task.with_(**changes)


def _copy(task: Task) -> TaskCopy:
    copy = decode_message(encode_message(task.id, task.type, task))[2]
    assert copy is not None
    return copy


def _seen(task: Task) -> dict:
    """What a claim answers, but the id and the claim's own instants."""
    data = task.to_json()
    for name in ("id", "started_at", "updated_at"):
        data.pop(name)
    return data | {"scopes": sorted(task.submitter_scopes or ()), "submitter": task.submitter}


def test_a_claim_on_the_copy_answers_what_a_claim_by_id_answers(store):
    by_id = _task()
    on_copy = by_id.with_(id=new_id(), idempotency_key=f"k-{new_id()}")
    store.create(by_id)
    store.create(on_copy)
    at = now()
    a = store.claim(by_id.id, "echo", "w1", at).task
    b = store.claim(on_copy.id, "echo", "w1", at, _copy(on_copy)).task
    assert a is not None and b is not None
    assert _seen(a) == _seen(b)
    assert b.status is Status.RUNNING and b.attempts == 1 and b.worker == "w1" and b.started_at == at
    # And the record says so too.
    stored = store.get(on_copy.id, consistent=True)
    assert stored is not None and _seen(stored) == _seen(b)


def test_a_copy_the_record_does_not_match_is_never_what_runs(store):
    """A message whose copy differs from the record (forged, or stale) runs the record."""
    task = _task(payload={"run": "this"})
    store.create(task)
    forged = _copy(task.with_(payload={"run": "that"}, submitter_scopes=frozenset({"admin"})))
    claimed = store.claim(task.id, "echo", "w1", now(), forged).task
    assert claimed is not None
    assert claimed.payload == {"run": "this"} and claimed.submitter_scopes == task.submitter_scopes


def test_a_copy_does_not_hide_an_earlier_attempt(store):
    task = _task()
    store.create(task)
    first = store.claim(task.id, "echo", "w1", now()).task
    assert first is not None
    assert store.requeue(first, now() - timedelta(seconds=1), TaskError("Boom", "first try"), now())
    again = store.claim(task.id, "echo", "w2", now(), _copy(task)).task
    assert again is not None
    assert again.attempts == 2 and again.error == TaskError("Boom", "first try") and again.worker == "w2"


def test_a_retried_task_is_claimed_as_its_record_says(store):
    task = _task(max_attempts=1)
    store.create(task)
    first = store.claim(task.id, "echo", "w1", now()).task
    assert first is not None
    assert store.finish(first, Status.FAILED, now(), error=TaskError("Boom", "no")) is not None
    store.retry(task.id, now())
    again = store.claim(task.id, "echo", "w2", now(), _copy(task)).task
    assert again is not None and again.attempts == 1 and again.run_at is None


def test_a_claim_on_a_copy_of_a_task_no_longer_queued_is_refused_with_the_record(store):
    task = _task()
    store.create(task)
    store.cancel(task.id, now())
    claim = store.claim(task.id, "echo", "w1", now(), _copy(task))
    assert claim.task is None and claim.current is not None and claim.current.status is Status.CANCELLED


def test_claims_on_one_copy_are_granted_once(store):
    task = _task()
    store.create(task)
    copy = _copy(task)
    granted: list[str] = []

    def claim(worker: str) -> None:
        if store.claim(task.id, "echo", worker, now(), copy).task is not None:
            granted.append(worker)

    threads = [threading.Thread(target=claim, args=(f"w{n}",)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 1


def test_a_message_carries_the_task_as_created_and_a_resend_carries_it_on(broker):
    task = _task()
    broker.send(task.id, task.type, 0, None, task)
    (message,) = broker.receive(10, 1)
    assert message.copy is not None and message.copy.digest == _copy(task).digest
    assert _seen(message.copy.task) == _seen(task)
    broker.send(message.task_id, message.task_type, 0, None, message.copy.task)
    broker.delete_many([message.receipt])
    (again,) = broker.receive(10, 1)
    assert again.copy is not None and again.copy.digest == message.copy.digest


def test_a_large_task_or_a_message_sent_without_it_names_the_task_only(broker):
    big = _task(payload={"blob": "x" * MAX_COPY_BYTES})
    small = _task()
    broker.send_many([(big.id, big.type, 0, big), (small.id, small.type, 0, None)])
    copies = {m.task_id: m.copy for m in broker.receive(10, 1)}
    assert copies == {big.id: None, small.id: None}


def test_the_copy_survives_its_own_encoding_unchanged():
    """The digest a worker recomputes from a message is the one stored at create."""
    task = _task()
    copy = _copy(task)
    assert _copy(copy.task).digest == copy.digest
    for bad in ({"type": "echo"}, {"type": 1, "payload": {}, "max_attempts": 3, "created_at": "x"}):
        with pytest.raises(ValueError):
            task_from_copy(task.id, bad)
    # An unreadable copy costs only the shortcut: the message still names its task.
    assert decode_message('{"id": "t1", "type": "echo", "copy": {"type": "echo"}}') == ("t1", "echo", None)
