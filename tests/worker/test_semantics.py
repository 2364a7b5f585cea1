"""The engine's guarantees, each against a real moto server and a real worker loop."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from conveyor.engine import Submission
from conveyor.model import Status, Task, new_id, now
from tests.conftest import wait_for
from tests.worker.testhandlers import runs


def submit(runtime, task_type: str, payload, **kw) -> Task:
    task, created = runtime.engine.submit(Submission(task_type, payload, **kw))
    assert created
    return task


def finished(runtime, task_id: str, timeout: float = 20) -> Task:
    return wait_for(lambda: (t := runtime.engine.get(task_id)).status.terminal and t, timeout=timeout)


def queue_empty(runtime) -> bool:
    return runtime.engine.broker.depth().total == 0


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
    wait_for(lambda: queue_empty(runtime), timeout=30)
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


def test_last_attempt_fails_with_the_last_error(runtime, start_worker, tmp_path):
    log = tmp_path / "runs"
    task = submit(runtime, "flaky", {"log": str(log), "succeed_on": 99})
    start_worker()
    done = finished(runtime, task.id)
    assert done.status is Status.FAILED and done.attempts == 3
    assert done.error is not None
    assert done.error.type == "ConnectionError"
    assert "attempt 3" in done.error.message
    wait_for(lambda: queue_empty(runtime))


def test_permanent_error_skips_retries(runtime, start_worker):
    task = submit(runtime, "fail", {"message": "bad input", "permanent": True})
    start_worker()
    done = finished(runtime, task.id)
    assert done.status is Status.FAILED and done.attempts == 1
    assert done.error and done.error.type == "PermanentError" and "bad input" in done.error.message


def test_per_attempt_timeout_fails_the_attempt(runtime, start_worker, tmp_path):
    log = tmp_path / "runs"
    task = submit(runtime, "slow-timeout", {"log": str(log), "seconds": 10})
    start_worker()
    done = finished(runtime, task.id)
    assert done.status is Status.FAILED and done.attempts == 2
    assert done.error and done.error.type == "Timeout"
    assert len(runs(log)) == 2


def test_sync_handler_timeout_in_a_thread(runtime, start_worker, tmp_path):
    task = submit(runtime, "block-timeout", {"log": str(tmp_path / "r"), "seconds": 3})
    start_worker()
    done = finished(runtime, task.id)
    assert done.status is Status.FAILED and done.error and done.error.type == "Timeout"


def test_delay_is_not_an_attempt(runtime, start_worker, tmp_path):
    log = tmp_path / "runs"
    start_worker()
    task = submit(runtime, "count", {"log": str(log)}, delay_seconds=2)
    time.sleep(1.2)
    assert runtime.engine.get(task.id).status is Status.QUEUED
    done = finished(runtime, task.id)
    assert done.status is Status.SUCCEEDED and done.attempts == 1
    assert done.started_at and done.run_at and done.started_at >= done.run_at


def test_a_message_before_run_at_is_hidden_until_then(runtime, start_worker, tmp_path):
    """Beyond SQS's 15-minute DelaySeconds the worker re-hides the message until run_at."""
    hidden: list[int] = []
    broker = runtime.engine.broker
    original = broker.change_visibility

    def spy(receipt: str, seconds: int) -> None:
        hidden.append(seconds)
        original(receipt, seconds)

    broker.change_visibility = spy
    task = submit(runtime, "count", {"log": str(tmp_path / "r")}, run_at=now() + timedelta(minutes=20))
    broker.send(task.id, task.type, 0)  # a copy that arrives early
    start_worker()
    wait_for(lambda: hidden)
    assert 1150 <= hidden[0] <= 1201
    current = runtime.engine.get(task.id)
    assert current.status is Status.QUEUED and current.attempts == 0


def test_prefetch_never_exceeds_free_slots(settings_factory, tasktypes, start_worker, tmp_path):
    from conveyor.bootstrap import build

    rt = build(settings_factory(tasktypes=str(tasktypes), worker_concurrency=2))
    asked: list[int] = []
    broker = rt.engine.broker
    original = broker.receive

    def spy(max_messages: int, wait_seconds: int):
        asked.append(max_messages)
        return original(max_messages, wait_seconds)

    broker.receive = spy
    log = tmp_path / "runs"
    tasks = [submit(rt, "count", {"log": str(log), "seconds": 0.6}) for _ in range(5)]
    w = start_worker(rt)
    peak = 0
    deadline = time.monotonic() + 20
    while not all(rt.engine.get(t.id).status.terminal for t in tasks) and time.monotonic() < deadline:
        peak = max(peak, w.worker.held)
        time.sleep(0.05)
    assert all(rt.engine.get(t.id).status is Status.SUCCEEDED for t in tasks)
    assert max(asked) <= 2
    assert peak <= 2


def test_cancel_a_running_task_reaches_the_handler(runtime, api, start_worker, tmp_path):
    task = submit(runtime, "count", {"log": str(tmp_path / "r"), "seconds": 30})
    start_worker()
    wait_for(lambda: runtime.engine.get(task.id).status is Status.RUNNING)
    r = api.post(f"/v1/tasks/{task.id}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    done = finished(runtime, task.id, timeout=10)
    assert done.status is Status.CANCELLED
    assert done.error and done.error.type == "Cancelled"


def test_no_accepted_task_is_lost_when_the_submitter_dies_before_sending(runtime, start_worker, tmp_path):
    """The API died after PutItem and before SendMessage: the sweeper sends it."""
    log = tmp_path / "runs"
    orphan = Task(id=new_id(), type="count", payload={"log": str(log)})
    runtime.engine.store.create(orphan)
    assert queue_empty(runtime)
    assert runtime.engine.sweep(older_than=1) == 0  # too young to be a suspect
    time.sleep(1.2)
    assert runtime.engine.sweep(older_than=1) == 1
    assert runtime.engine.sweep(older_than=1) == 0  # no second message for it
    start_worker()
    assert finished(runtime, orphan.id).status is Status.SUCCEEDED
    assert len(runs(log)) == 1


def test_sweeper_leaves_a_healthy_backlog_alone(runtime):
    """Old queued tasks that still have their messages are not sent twice."""
    tasks = [submit(runtime, "echo", {"n": n}) for n in range(3)]
    assert runtime.engine.sweep(older_than=0) == 0
    assert runtime.engine.broker.depth().total == len(tasks)


def test_submit_survives_a_refused_send(runtime, start_worker, monkeypatch):
    from conveyor.errors import Unavailable

    def refuse(*a, **k):
        raise Unavailable("sqs SendMessage: injected")

    monkeypatch.setattr(runtime.engine.broker, "send", refuse)
    task = submit(runtime, "echo", {"x": 1})
    assert runtime.engine.get(task.id).status is Status.QUEUED
    monkeypatch.undo()
    time.sleep(1.1)
    assert runtime.engine.sweep(older_than=1) == 1
    start_worker()
    assert finished(runtime, task.id).status is Status.SUCCEEDED


def test_reaper_fails_tasks_whose_message_was_dead_lettered(runtime):
    task = submit(runtime, "echo", {})
    runtime.engine.dead_letters.send(task.id, task.type)
    assert runtime.engine.reap() == 1
    done = runtime.engine.get(task.id)
    assert done.status is Status.FAILED and done.error and done.error.type == "DeadLettered"
    assert runtime.engine.reap() == 0  # the message stays for operators; reaping is idempotent


def test_worker_heartbeat_lists_it_and_stop_removes_it(runtime, start_worker):
    w = start_worker()
    found = wait_for(lambda: runtime.engine.live_workers())
    assert [x.id for x in found] == [w.worker.id]
    w.stop()
    assert runtime.engine.live_workers() == []


def test_finished_tasks_carry_a_ttl(runtime, start_worker):
    task = submit(runtime, "echo", {})
    start_worker()
    done = finished(runtime, task.id)
    stored = runtime.engine.store.get(task.id)
    assert stored.expires_at is not None
    assert done.finished_at is not None
    expected = done.finished_at.timestamp() + runtime.settings.retention_seconds
    assert abs(stored.expires_at - expected) <= 2


def test_deletes_go_in_full_batches_and_none_waits_long(runtime, start_worker, tmp_path):
    from worker.deletes import GATHER_SECONDS as DELETE_GATHER_SECONDS

    batches: list[int] = []
    broker = runtime.engine.broker
    original = broker.delete_many

    def spy(receipts):
        receipts = list(receipts)
        batches.append(len(receipts))
        return original(receipts)

    broker.delete_many = spy
    log = tmp_path / "runs"
    tasks = [submit(runtime, "count", {"log": str(log), "seconds": 0}) for _ in range(25)]
    start_worker(runtime)
    for t in tasks:
        finished(runtime, t.id)
    last_finish = time.monotonic()
    wait_for(lambda: queue_empty(runtime), timeout=DELETE_GATHER_SECONDS + 5)
    # Every message went in a batch of at most ten, and the last waited at most about
    # DELETE_GATHER_SECONDS for its batch to fill.
    assert sum(batches) == 25 and max(batches) <= 10
    assert len(batches) <= 5, batches  # not one request per message
    assert time.monotonic() - last_finish < DELETE_GATHER_SECONDS + 2


def test_under_a_backlog_a_receive_waits_briefly_for_a_fuller_batch(
    settings_factory, tasktypes, start_worker, tmp_path
):
    from conveyor.bootstrap import build

    rt = build(settings_factory(tasktypes=str(tasktypes), worker_concurrency=8))
    got: list[int] = []
    broker = rt.engine.broker
    original = broker.receive

    def spy(max_messages: int, wait_seconds: int):
        messages = original(max_messages, wait_seconds)
        if messages:
            got.append(len(messages))
        return messages

    broker.receive = spy
    log = tmp_path / "runs"
    tasks = [submit(rt, "count", {"log": str(log), "seconds": 0.05}) for _ in range(40)]
    start_worker(rt)
    for t in tasks:
        assert finished(rt, t.id).status is Status.SUCCEEDED
    # Slots free one at a time; without the wait most receives would bring one or two.
    assert sum(got) == 40 and sum(got) / len(got) >= 3, got
