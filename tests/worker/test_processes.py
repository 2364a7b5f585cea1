"""Real worker processes: SIGTERM drains gracefully, kill -9 loses nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from conveyor.model import Status
from tests.conftest import ROOT, service_env, wait_for
from tests.worker.test_end_to_end import finished, submit
from tests.worker.testhandlers import runs


def spawn_worker(settings, **env: str) -> subprocess.Popen[bytes]:
    fast = {"CONVEYOR_POLL_WAIT_SECONDS": "1", "CONVEYOR_HEARTBEAT_SECONDS": "1"}
    variables = service_env(settings, "tests.worker.testhandlers", **fast | env)
    return subprocess.Popen([sys.executable, "-m", "worker.main"], env=variables, cwd=ROOT)


def test_sigterm_lets_running_tasks_finish_and_exits_zero(runtime, settings, tmp_path: Path):
    log = tmp_path / "runs"
    proc = spawn_worker(settings, CONVEYOR_WORKER_CONCURRENCY="2")
    try:
        running = [submit(runtime, "count", {"log": str(log), "seconds": 2}) for _ in range(2)]
        wait_for(lambda: all(runtime.engine.get(t.id).status is Status.RUNNING for t in running), timeout=20)
        proc.send_signal(signal.SIGTERM)
        later = submit(runtime, "count", {"log": str(log)})
        assert proc.wait(20) == 0
    finally:
        proc.kill()
    for t in running:
        done = runtime.engine.get(t.id)
        assert done.status is Status.SUCCEEDED and done.attempts == 1
    # Received after SIGTERM or never received: it is still queued, attempts untouched,
    # and its message is visible now, not after the visibility timeout.
    assert runtime.engine.get(later.id).status is Status.QUEUED
    assert runtime.engine.get(later.id).attempts == 0
    wait_for(lambda: runtime.engine.broker.depth().visible == 1, timeout=3)
    assert runtime.engine.live_workers() == []  # it deregistered


def test_kill_9_mid_task_is_taken_over_and_nothing_is_lost(runtime, settings, tmp_path: Path):
    log = tmp_path / "runs"
    victim = spawn_worker(settings)
    rescuer = None
    try:
        tasks = [submit(runtime, "count", {"log": str(log), "seconds": 1.5}) for _ in range(3)]
        wait_for(lambda: any(runtime.engine.get(t.id).status is Status.RUNNING for t in tasks), timeout=20)
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        started = time.monotonic()
        rescuer = spawn_worker(settings)
        for t in tasks:
            done = finished(runtime, t.id, timeout=40)
            assert done.status is Status.SUCCEEDED, done
        took = time.monotonic() - started
    finally:
        victim.kill()
        if rescuer:
            rescuer.send_signal(signal.SIGTERM)
            rescuer.wait(20)
    # Each task succeeded exactly once; those cut off were re-run as a new attempt. An attempt
    # the victim claimed but was killed before its handler started leaves no run behind, so
    # the check is: no attempt ran twice, and the run that finished is the task's last attempt.
    by_task: dict[str, list[int]] = {}
    for task_id, attempt, _pid in runs(log):
        by_task.setdefault(task_id, []).append(attempt)
    assert set(by_task) == {t.id for t in tasks}
    for t in tasks:
        attempts = by_task[t.id]
        assert len(attempts) == len(set(attempts)), attempts
        assert max(attempts) == runtime.engine.get(t.id).attempts
    assert took < 30
