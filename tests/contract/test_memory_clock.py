"""What only the memory adapters do: they read time from a Clock, so a record's TTL
runs out when a test moves the clock on (DynamoDB removes such items some time after,
so the contract suite cannot ask it of both)."""

from __future__ import annotations

from datetime import timedelta

from conveyor.clock import FakeClock
from conveyor.memory import MemoryTaskStore, MemoryWorkerRegistry
from conveyor.model import Status, Task, WorkerInfo, new_id


def test_a_worker_record_is_gone_once_its_ttl_has_passed():
    clock = FakeClock()
    workers = MemoryWorkerRegistry(clock)
    workers.heartbeat(WorkerInfo("w1", "h", 1, clock.now(), clock.now(), 0, 1, "t"), 60)
    workers.request_cancel("w1", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    clock.advance(59)
    assert workers.worker("w1") is not None and [w.id for w in workers.workers()] == ["w1"]
    clock.advance(2)
    assert workers.worker("w1") is None and workers.workers() == []
    # Its pending requests went with it: a worker of that id starts with none.
    workers.request_cancel("w1", "01ARZ3NDEKTSV4RRFFQ69G5FAW")  # no record: dropped
    assert workers.heartbeat(WorkerInfo("w1", "h", 2, clock.now(), clock.now(), 0, 1, "t"), 60) == set()


def test_a_finished_task_is_gone_once_its_retention_has_passed():
    clock = FakeClock()
    store = MemoryTaskStore(retention_seconds=3600, clock=clock)
    done, kept = (Task(id=new_id(), type="echo", payload={}, created_at=clock.now()) for _ in range(2))
    for t in (done, kept):
        store.create(t)
    claimed = store.claim(done.id, "echo", "w", clock.now()).task
    assert store.finish(claimed, Status.SUCCEEDED, clock.now(), retention_seconds=60) is not None
    clock.advance(59)
    assert store.get(done.id) is not None and store.count_by_status()[Status.SUCCEEDED] == 1
    clock.advance(2)
    assert store.get(done.id) is None
    assert [t.id for t in store.query().items] == [kept.id]
    assert store.count_by_status()[Status.SUCCEEDED] == 0
    clock.advance(timedelta(days=30).total_seconds())
    assert store.get(kept.id) is not None  # an unfinished task has no TTL


def test_an_idempotency_key_goes_with_its_expired_task():
    clock = FakeClock()
    store = MemoryTaskStore(retention_seconds=60, clock=clock)
    first = Task(id=new_id(), type="echo", payload={}, idempotency_key="k", created_at=clock.now())
    store.create(first, "h")
    claimed = store.claim(first.id, "echo", "w", clock.now()).task
    store.finish(claimed, Status.SUCCEEDED, clock.now())
    assert store.create(first.with_(id=new_id()), "h") == (store.get(first.id), False)
    clock.advance(61)
    again = Task(id=new_id(), type="echo", payload={}, idempotency_key="k", created_at=clock.now())
    assert store.create(again, "other") == (again, True)  # a new task: the key was free
