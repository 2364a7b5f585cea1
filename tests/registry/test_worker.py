"""Workers follow the registry: paused types wait without attempts, deleted types fail
clearly, and concurrency, maxAttempts and timeoutSeconds come from the TaskType."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conveyor.engine import Submission
from conveyor.model import Status, Task
from tests.conftest import wait_for
from tests.registry.conftest import TaskTypeDir
from tests.registry.handlers import most_at_once, spans

QUICK = {"initialSeconds": 0.1, "maxSeconds": 0.2}


@pytest.fixture
def tasktypes(tasktypes: TaskTypeDir) -> TaskTypeDir:
    tasktypes.apply("held", handler="registry-test-span", paused=True, maxAttempts=1)
    tasktypes.apply("doomed", handler="registry-test-span")
    tasktypes.apply("pair", handler="registry-test-span", concurrency=2, maxAttempts=1)
    tasktypes.apply("brief", handler="registry-test-span", maxAttempts=2, timeoutSeconds=1, backoff=QUICK)
    return tasktypes


def submit(runtime, task_type: str, payload) -> Task:
    task, created = runtime.engine.submit(Submission(task_type, payload))
    assert created
    return task


def finished(runtime, task_id: str, timeout: float = 15) -> Task:
    return wait_for(lambda: (t := runtime.engine.get(task_id)).status.terminal and t, timeout=timeout)


def test_a_paused_type_stays_queued_without_attempts_until_unpaused(
    runtime, start_worker, tasktypes: TaskTypeDir, tmp_path: Path
):
    log = tmp_path / "runs"
    held = submit(runtime, "held", {"log": str(log)})
    control = submit(runtime, "echo", {"x": 1})
    start_worker()
    assert finished(runtime, control.id).status is Status.SUCCEEDED
    time.sleep(1.5)  # the held message has come back (hold_seconds=1) and been held again
    still = runtime.engine.get(held.id)
    assert still.status is Status.QUEUED and still.attempts == 0 and spans(log) == []

    tasktypes.apply("held", handler="registry-test-span", paused=False, maxAttempts=1)
    done = finished(runtime, held.id, timeout=10)
    assert done.status is Status.SUCCEEDED and done.attempts == 1
    assert [s[0] for s in spans(log)] == [held.id]  # ran exactly once


def test_a_task_whose_type_was_deleted_fails_with_unknown_task_type(
    runtime, start_worker, tasktypes: TaskTypeDir, tmp_path: Path
):
    task = submit(runtime, "doomed", {"log": str(tmp_path / "runs")})
    tasktypes.delete("doomed")
    wait_for(lambda: "doomed" not in runtime.engine.registry, timeout=5)
    start_worker()
    done = finished(runtime, task.id)
    assert done.status is Status.FAILED and done.attempts == 0
    assert done.error is not None and done.error.type == "UnknownTaskType"
    assert "doomed" in done.error.message and "deleted" in done.error.message
    assert spans(tmp_path / "runs") == []


def test_per_type_concurrency_is_respected(runtime, start_worker, tmp_path: Path):
    log = tmp_path / "runs"
    tasks = [submit(runtime, "pair", {"log": str(log), "seconds": 0.5}) for _ in range(4)]
    start_worker()  # 8 slots: only the TaskType's concurrency (2) holds them back
    for task in tasks:
        assert finished(runtime, task.id, timeout=25).status is Status.SUCCEEDED
    assert len(spans(log)) == 4
    assert most_at_once(log) == 2


def test_max_attempts_and_timeout_come_from_the_tasktype(runtime, start_worker, tmp_path: Path):
    log = tmp_path / "runs"
    task = submit(runtime, "brief", {"log": str(log), "seconds": 5})
    assert task.max_attempts == 2
    start = time.monotonic()
    start_worker()
    done = finished(runtime, task.id)
    assert done.status is Status.FAILED and done.attempts == 2
    assert done.error is not None and done.error.type == "Timeout"
    assert "timeoutSeconds=1" in done.error.message and "attempt 2 of 2" in done.error.message
    assert time.monotonic() - start < 9  # each attempt was cut at 1 s; two full runs take 10
    assert spans(log) == []  # neither attempt reached its end
