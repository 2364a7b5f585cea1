"""The worker's guarantees on the memory adapters and a fake clock: a real worker loop,
with delays, backoffs and dead owners brought on by ``clock.advance`` instead of waits.
tests/worker/test_end_to_end.py runs the ones only SQS and DynamoDB can show on moto."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conveyor.model import QueueDepth, Status, Task, WorkerInfo, new_id
from tests.support.spies import spy
from tests.worker.conftest import Stub
from tests.worker.testhandlers import runs


@pytest.mark.parametrize("count", ["count", "count-sync"])  # async, sync handler
def test_duplicate_delivery_never_runs_the_handler_twice(stub: Stub, count: str, tmp_path: Path):
    log = tmp_path / "runs"
    task = stub.submit(count, {"log": str(log), "seconds": 0.3})
    # Two more messages for the same attempt, as SQS may deliver (at-least-once).
    stub.broker.send(task.id, count)
    stub.broker.send(task.id, count)
    stub.start()
    stub.start()
    done = stub.finished(task.id)
    assert done.status is Status.SUCCEEDED and done.attempts == 1
    # The standby copies come back after the visibility timeout, find the task terminal,
    # and are deleted: every copy is consumed.
    stub.clock.advance(stub.settings.visibility_timeout + 1)
    stub.broker.join()
    assert len(runs(log)) == 1


def test_retries_with_backoff_then_success(stub: Stub, tmp_path: Path):
    log = tmp_path / "runs"
    task = stub.submit("flaky", {"log": str(log), "succeed_on": 3})
    stub.start()
    for attempt in (1, 2):
        failed = stub.settle(
            lambda a=attempt: (t := stub.get(task.id)).attempts == a and t.status is Status.QUEUED and t
        )
        assert failed.error is not None and failed.error.type == "ConnectionError"
        assert failed.run_at is not None  # backing off: not before run_at
        stub.clock.advance(1)  # backoff here is at most 0.5 s; its message hides 1 s
    done = stub.finished(task.id)
    assert done.status is Status.SUCCEEDED and done.attempts == 3 and done.result == {"attempt": 3}
    assert [attempt for _, attempt, _ in runs(log)] == [1, 2, 3]


def test_a_backing_off_task_does_not_run_before_its_time(stub: Stub, tmp_path: Path):
    log = tmp_path / "runs"
    task = stub.submit("flaky", {"log": str(log), "succeed_on": 2})
    stub.start()
    stub.settle(lambda: stub.get(task.id).attempts == 1 and stub.get(task.id).status is Status.QUEUED)
    stub.clock.advance(0.5)  # not yet: the message hides a whole second
    stub.settle(lambda: stub.broker.depth().in_flight == 1)
    assert stub.get(task.id).attempts == 1 and len(runs(log)) == 1
    stub.clock.advance(0.6)
    assert stub.finished(task.id).status is Status.SUCCEEDED


def test_last_attempt_fails_with_the_last_error(stub: Stub, tmp_path: Path):
    task = stub.submit("flaky", {"log": str(tmp_path / "runs"), "succeed_on": 99})
    stub.start()
    for attempt in (1, 2):
        stub.settle(
            lambda a=attempt: stub.get(task.id).attempts == a and stub.get(task.id).status is Status.QUEUED
        )
        stub.clock.advance(1)
    done = stub.finished(task.id)
    assert done.status is Status.FAILED and done.attempts == 3
    assert done.error is not None and done.error.type == "ConnectionError"
    assert "attempt 3 of 3" in done.error.message
    stub.broker.join()


def test_permanent_error_skips_retries(stub: Stub):
    task = stub.submit("fail", {"message": "bad input", "permanent": True})
    stub.start()
    done = stub.finished(task.id)
    assert done.status is Status.FAILED and done.attempts == 1
    assert done.error and done.error.type == "PermanentError" and "bad input" in done.error.message
    stub.broker.join()


def test_per_attempt_timeout_fails_the_attempt(stub: Stub, tmp_path: Path):
    log = tmp_path / "runs"
    task = stub.submit("slow-timeout", {"log": str(log), "seconds": 10})  # timeoutSeconds: 1
    stub.start()
    stub.settle(lambda: stub.get(task.id).attempts == 1 and stub.get(task.id).status is Status.QUEUED)
    stub.clock.advance(1)
    done = stub.finished(task.id)
    assert done.status is Status.FAILED and done.attempts == 2
    assert done.error and done.error.type == "Timeout"
    assert len(runs(log)) == 2


def test_sync_handler_timeout_in_a_thread(stub: Stub, tmp_path: Path):
    task = stub.submit("block-timeout", {"log": str(tmp_path / "r"), "seconds": 3})
    stub.start()
    done = stub.finished(task.id)
    assert done.status is Status.FAILED and done.error and done.error.type == "Timeout"


def test_delay_is_not_an_attempt(stub: Stub, tmp_path: Path):
    log = tmp_path / "runs"
    stub.start()
    task = stub.submit("count", {"log": str(log)}, delay_seconds=2)
    stub.clock.advance(1.5)
    stub.settle(lambda: stub.broker.depth().delayed == 1)
    assert stub.get(task.id).status is Status.QUEUED and not runs(log)
    stub.clock.advance(0.6)
    done = stub.finished(task.id)
    assert done.status is Status.SUCCEEDED and done.attempts == 1
    assert done.started_at and done.run_at and done.started_at >= done.run_at


def test_a_message_before_run_at_is_hidden_until_then(stub: Stub, tmp_path: Path):
    """Beyond the broker's 15-minute delay the worker re-hides the message until run_at,
    without counting an attempt."""
    log = tmp_path / "runs"
    task = stub.submit("count", {"log": str(log)}, run_at=stub.clock.now() + timedelta(minutes=20))
    stub.broker.send(task.id, task.type, 0)  # a copy that arrives early
    stub.start()
    stub.settle(lambda: stub.broker.depth().in_flight == 1)  # received and hidden
    stub.clock.advance(900)  # the submit's own message comes due (capped at 15 minutes)
    stub.settle(lambda: stub.broker.depth().in_flight == 2)
    stub.clock.advance(290)  # 1190 s: still early
    assert stub.get(task.id).attempts == 0 and not runs(log)
    stub.clock.advance(15)
    done = stub.finished(task.id)
    assert done.status is Status.SUCCEEDED and done.attempts == 1 and len(runs(log)) == 1


def test_prefetch_never_exceeds_free_slots(make_stub, tmp_path: Path):
    stub = make_stub(worker_concurrency=2)
    receives = spy(stub.broker, "receive")
    tasks = [stub.submit("count", {"log": str(tmp_path / "runs"), "seconds": 0.2}) for _ in range(5)]
    w = stub.start()
    peak = 0
    while not all(stub.get(t.id).status.terminal for t in tasks):
        peak = max(peak, w.worker.held)
        time.sleep(0.01)  # sampling the peak, not waiting for it
    assert all(stub.get(t.id).status is Status.SUCCEEDED for t in tasks)
    assert max(receives.arg(0, "max_messages")) <= 2 and peak <= 2


@pytest.mark.parametrize("count", ["count", "count-sync"])  # async, sync handler
def test_cancel_a_running_task_reaches_the_handler(stub: Stub, count: str, tmp_path: Path):
    task = stub.submit(count, {"log": str(tmp_path / "r"), "seconds": 30})
    stub.start()
    stub.until(lambda: stub.get(task.id).status is Status.RUNNING)
    assert stub.engine.cancel(task.id).cancel_requested
    done = stub.finished(task.id)
    assert done.status is Status.CANCELLED and done.error and done.error.type == "Cancelled"


def test_no_accepted_task_is_lost_when_the_submitter_dies_before_sending(stub: Stub, tmp_path: Path):
    """The API died after recording the task and before sending: the sweeper sends it."""
    log = tmp_path / "runs"
    orphan = Task(
        id=new_id(),
        type="count",
        payload={"log": str(log)},
        created_at=stub.clock.now(),
        updated_at=stub.clock.now(),
    )
    stub.store.create(orphan)
    assert stub.engine.sweep(older_than=1) == 0  # too young to be a suspect
    stub.clock.advance(1.2)
    assert stub.engine.sweep(older_than=1) == 1
    assert stub.engine.sweep(older_than=1) == 0  # no second message for it
    stub.start()
    assert stub.finished(orphan.id).status is Status.SUCCEEDED
    assert len(runs(log)) == 1


def test_sweeper_leaves_a_healthy_backlog_alone(stub: Stub):
    tasks = [stub.submit("echo", {"n": n}) for n in range(3)]
    stub.clock.advance(3600)
    assert stub.engine.sweep(older_than=0) == 0
    assert stub.broker.depth().total == len(tasks)


def test_submit_survives_a_refused_send(stub: Stub, monkeypatch):
    from conveyor.errors import Unavailable

    def refuse(*a, **k):
        raise Unavailable("sqs SendMessage: injected")

    monkeypatch.setattr(stub.broker, "send", refuse)
    task = stub.submit("echo", {"x": 1})
    assert stub.get(task.id).status is Status.QUEUED
    monkeypatch.undo()
    stub.clock.advance(1.1)
    assert stub.engine.sweep(older_than=1) == 1
    stub.start()
    assert stub.finished(task.id).status is Status.SUCCEEDED


def test_reaper_fails_tasks_whose_message_was_dead_lettered(stub: Stub):
    task = stub.submit("echo", {})
    stub.engine.dead_letters.send(task.id, task.type)
    assert stub.engine.reap() == 1
    done = stub.get(task.id)
    assert done.status is Status.FAILED and done.error and done.error.type == "DeadLettered"
    assert stub.engine.reap() == 0  # the message stays for operators; reaping is idempotent


def test_worker_heartbeat_lists_it_and_stop_removes_it(stub: Stub):
    w = stub.start()
    found = stub.until(lambda: stub.engine.live_workers())
    assert [x.id for x in found] == [w.worker.id]
    w.stop()
    assert stub.engine.live_workers() == []


def test_finished_tasks_carry_a_ttl(stub: Stub):
    task = stub.submit("echo", {})
    stub.start()
    done = stub.finished(task.id)
    assert done.finished_at is not None and done.expires_at is not None
    assert done.expires_at == int(done.finished_at.timestamp()) + stub.settings.retention_seconds


def test_deletes_go_in_full_batches_and_none_waits_long(stub: Stub, tmp_path: Path):
    from worker.deletes import GATHER_SECONDS

    deletes = spy(stub.broker, "delete_many")
    tasks = [stub.submit("count", {"log": str(tmp_path / "runs")}) for _ in range(25)]
    stub.start(delete_gather_seconds=GATHER_SECONDS)
    for t in tasks:
        stub.finished(t.id)
    stub.broker.join(timeout=GATHER_SECONDS + 2)  # the last batch waited at most about the gather time
    batches = [len(list(receipts)) for receipts in deletes.arg(0)]
    assert sum(batches) == 25 and max(batches) <= 10
    assert len(batches) <= 5, batches  # not one request per message


def test_under_a_backlog_a_receive_waits_briefly_for_a_fuller_batch(make_stub, tmp_path: Path):
    stub = make_stub(worker_concurrency=8)
    receives = spy(stub.broker, "receive")
    tasks = [stub.submit("count", {"log": str(tmp_path / "runs"), "seconds": 0.05}) for _ in range(40)]
    stub.start()
    for t in tasks:
        assert stub.finished(t.id).status is Status.SUCCEEDED
    got = [len(messages) for messages in receives.results() if messages]
    # Slots free one at a time; without the wait most receives would bring one or two.
    assert sum(got) == 40 and sum(got) / len(got) >= 3, got


# -- the branches no loop test reached before: each an I/O path of a lifecycle decision -------


def queued(stub: Stub, task_type: str, payload: dict, **kw) -> Task:
    at = stub.clock.now()
    task = Task(id=new_id(), type=task_type, payload=payload, created_at=at, updated_at=at, **kw)
    stub.store.create(task)
    return task


@pytest.mark.parametrize("count", ["count", "count-sync"])  # async, sync handler
def test_a_claim_by_this_worker_whose_answer_was_lost_is_run(stub: Stub, count: str, tmp_path: Path):
    log = tmp_path / "runs"
    task = queued(stub, count, {"log": str(log)})
    # The claim took effect in the store; its answer never reached the worker.
    assert stub.store.claim(task.id, count, "w-lost", stub.clock.now()).task is not None
    stub.broker.send(task.id, count)
    stub.start(worker_id="w-lost")
    done = stub.finished(task.id)
    assert done.status is Status.SUCCEEDED and done.attempts == 1 and len(runs(log)) == 1


@pytest.mark.parametrize("count", ["count", "count-sync"])  # async, sync handler
def test_a_dead_owner_on_the_last_attempt_fails_the_task_as_worker_lost(
    stub: Stub, count: str, tmp_path: Path
):
    once = count.replace("count", "count-once")  # count-once, count-once-sync
    task = queued(stub, once, {"log": str(tmp_path / "runs")}, max_attempts=1)
    stub.store.claim(task.id, once, "w-dead", stub.clock.now())  # it never beat again
    stub.broker.send(task.id, once)
    stub.start()
    done = stub.finished(task.id)
    assert done.status is Status.FAILED and done.error is not None
    assert done.error.type == "WorkerLost" and "w-dead" in done.error.message
    stub.broker.join()
    assert not runs(tmp_path / "runs")


@pytest.mark.parametrize("count", ["count", "count-sync"])  # async, sync handler
def test_a_dead_owner_with_attempts_left_is_taken_over(stub: Stub, count: str, tmp_path: Path):
    log = tmp_path / "runs"
    task = queued(stub, count, {"log": str(log)})
    stub.store.claim(task.id, count, "w-dead", stub.clock.now())
    stub.broker.send(task.id, count)
    stub.start()
    done = stub.finished(task.id)
    assert done.status is Status.SUCCEEDED and done.attempts == 2 and done.worker != "w-dead"


@pytest.mark.parametrize("count", ["count", "count-sync"])  # async, sync handler
def test_a_live_owner_keeps_its_task_until_its_heartbeat_stops(stub: Stub, count: str, tmp_path: Path):
    log = tmp_path / "runs"
    task = queued(stub, count, {"log": str(log)})
    at = stub.clock.now()
    stub.engine.workers.heartbeat(WorkerInfo("w-alive", "h", 1, at, at, 1, 1, "0"), 3600)
    stub.store.claim(task.id, count, "w-alive", at)
    stub.broker.send(task.id, count)
    stub.start()
    stub.settle(lambda: stub.broker.depth().in_flight == 1)  # kept as a standby copy
    assert stub.get(task.id).worker == "w-alive" and not runs(log)
    # Its owner falls silent: once it counts as dead, the standby copy takes the task over.
    stub.clock.advance(stub.settings.worker_dead_after + stub.settings.visibility_timeout + 1)
    done = stub.finished(task.id)
    assert done.status is Status.SUCCEEDED and done.attempts == 2 and len(runs(log)) == 1


def test_a_task_resubmitted_under_another_type_is_claimed_as_that_type(stub: Stub, tmp_path: Path):
    log = tmp_path / "runs"
    task = queued(stub, "count", {"log": str(log)})
    stub.broker.send(task.id, "count-once")  # a message naming the type it had before
    stub.start()
    done = stub.finished(task.id)
    assert done.status is Status.SUCCEEDED and done.type == "count" and done.attempts == 1
    assert len(runs(log)) == 1


def test_messages_are_held_not_failed_while_the_registry_is_empty(make_stub, tasktypes: Path, tmp_path: Path):
    empty = tmp_path / "no-types-yet"
    empty.mkdir()
    stub = make_stub(tasktypes=str(empty), hold_seconds=30)
    log = tmp_path / "runs"
    task = queued(stub, "count", {"log": str(log)})
    stub.broker.send(task.id, "count")
    stub.start()
    stub.settle(lambda: stub.broker.depth().in_flight == 1)
    assert stub.get(task.id).status is Status.QUEUED and stub.get(task.id).attempts == 0
    # The registry arrives (its ConfigMap mounted); the held message comes back and runs.
    shutil.copytree(tasktypes, empty, dirs_exist_ok=True)
    stub.until(lambda: len(stub.engine.registry) > 0, timeout=5)
    stub.clock.advance(30)
    assert stub.finished(task.id).status is Status.SUCCEEDED
    assert len(runs(log)) == 1


def test_a_paused_types_messages_wait_without_counting_receives(make_stub, tmp_path: Path):
    stub = make_stub(hold_seconds=30)
    task = queued(stub, "count", {"log": str(tmp_path / "runs")})
    stub.broker.send(task.id, "count")
    paused = Path(stub.settings.tasktypes) / "count.yaml"
    paused.write_text(paused.read_text().replace("spec:\n", "spec:\n  paused: true\n"))
    stub.until(lambda: stub.engine.registry.get("count").paused, timeout=5)
    stub.start()
    for _ in range(3):
        # Each round the message is replaced by a fresh copy (never received: its receive
        # count starts again) due in hold_seconds.
        stub.settle(lambda: stub.broker.depth() == QueueDepth(visible=0, in_flight=0, delayed=1))
        stub.clock.advance(31)
    stub.settle(lambda: stub.broker.depth() == QueueDepth(visible=0, in_flight=0, delayed=1))
    assert stub.get(task.id).attempts == 0 and stub.get(task.id).status is Status.QUEUED


def test_a_stop_does_not_wait_out_an_idle_long_poll(make_stub):
    stub = make_stub(poll_wait_seconds=5)
    w = stub.start()
    stub.until(lambda: w.worker.polling)  # a long poll is waiting
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 2  # not the 5 s the poll would take


def test_what_an_abandoned_poll_brings_goes_straight_back(make_stub):
    """A stop lands while a long poll waits; a message then arrives and that poll takes it.
    The worker is no longer waiting for the poll: the message is handed back at once, not
    left hidden for the visibility timeout."""
    stub = make_stub(poll_wait_seconds=5)
    receives = spy(stub.broker, "receive")
    w = stub.start()
    stub.until(lambda: w.worker.polling)  # a long poll is waiting
    w.loop.call_soon_threadsafe(w.worker.request_stop)
    w.thread.join(5)
    assert not w.thread.is_alive()
    task = stub.submit("echo", {})  # wakes the abandoned poll, which receives it
    stub.until(lambda: len(receives.results()) > 0 and receives.results()[-1])
    stub.until(lambda: stub.broker.depth().visible == 1)  # visible again without moving the clock
    assert stub.get(task.id).status is Status.QUEUED and stub.get(task.id).attempts == 0
