"""The worker on SQS and DynamoDB (the moto server): the guarantees only the real
services' semantics can show -- visibility timeouts and redelivery, conditional writes
across workers, and a cancel travelling from the API to a running handler. The rest of
the worker's behaviour is in test_semantics.py, on the memory adapters."""

from __future__ import annotations

from pathlib import Path

from conveyor.engine import Submission
from conveyor.model import Status, Task
from tests.conftest import wait_for
from tests.worker.testhandlers import runs


def submit(runtime, task_type: str, payload, **kw) -> Task:
    task, created = runtime.engine.submit(Submission(task_type, payload, **kw))
    assert created
    return task


def finished(runtime, task_id: str, timeout: float = 20) -> Task:
    return wait_for(lambda: (t := runtime.engine.get(task_id)).status.terminal and t, timeout=timeout)


def test_duplicate_delivery_never_runs_the_handler_twice(runtime, start_worker, tmp_path: Path):
    log = tmp_path / "runs"
    task = submit(runtime, "count", {"log": str(log), "seconds": 0.5})
    # Two more messages for the same attempt, as SQS may deliver (at-least-once).
    runtime.engine.broker.send(task.id, "count")
    runtime.engine.broker.send(task.id, "count")
    start_worker()
    start_worker()
    done = finished(runtime, task.id)
    assert done.status is Status.SUCCEEDED and done.attempts == 1
    # Every copy is consumed: the standby copies are deleted once the task is terminal.
    wait_for(lambda: runtime.engine.broker.depth().total == 0, timeout=30)
    assert len(runs(log)) == 1


def test_lease_heartbeat_keeps_a_long_task_from_redelivery(
    settings_factory, tasktypes, start_worker, tmp_path
):
    from conveyor.bootstrap import build

    # The queue's visibility timeout is 2 s; the task runs 5 s. Without the heartbeat the
    # message would come back to the second worker twice over.
    rt = build(settings_factory(tasktypes=str(tasktypes), visibility_timeout=2, heartbeat_seconds=0.5))
    log = tmp_path / "runs"
    task = submit(rt, "count", {"log": str(log), "seconds": 5})
    start_worker(rt)
    wait_for(lambda: rt.engine.get(task.id).status is Status.RUNNING)
    start_worker(rt)
    done = finished(rt, task.id, timeout=30)
    assert done.status is Status.SUCCEEDED and done.attempts == 1
    assert len(runs(log)) == 1


def test_retries_with_backoff_then_success(runtime, start_worker, tmp_path):
    log = tmp_path / "runs"
    task = submit(runtime, "flaky", {"log": str(log), "succeed_on": 3})
    start_worker()
    done = finished(runtime, task.id)
    assert done.status is Status.SUCCEEDED
    assert done.attempts == 3 and done.result == {"attempt": 3}
    assert [attempt for _, attempt, _ in runs(log)] == [1, 2, 3]
    wait_for(lambda: runtime.engine.broker.depth().total == 0)


def test_cancel_a_running_task_reaches_the_handler(runtime, api, start_worker, tmp_path):
    task = submit(runtime, "count", {"log": str(tmp_path / "r"), "seconds": 30})
    start_worker()
    wait_for(lambda: runtime.engine.get(task.id).status is Status.RUNNING)
    r = api.post(f"/v1/tasks/{task.id}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    done = finished(runtime, task.id, timeout=10)
    assert done.status is Status.CANCELLED
    assert done.error and done.error.type == "Cancelled"
