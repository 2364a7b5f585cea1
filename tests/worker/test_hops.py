"""A sync handler's attempt takes one thread hop: the handler and the write of its
outcome run in the same thread, so the loop wakes once per attempt for them, not twice.
What needs the loop first (a progress write owed, a retry, a timeout) still goes
through it, and a timed-out thread's late return never writes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.model import Status
from tests.worker.conftest import Stub
from tests.worker.testhandlers import runs


def _watch(
    stub: Stub, monkeypatch: pytest.MonkeyPatch, name: str, seen: list[tuple[str, str, int]] | None = None
) -> list[tuple[str, str, int]]:
    """Every call of ``stub.store.<name>``, in order into ``seen``: (method, task id, thread)."""
    seen = [] if seen is None else seen
    original = getattr(stub.store, name)

    def watched(task: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((name, getattr(task, "id", task), threading.get_ident()))  # a task or its id
        return original(task, *args, **kwargs)

    monkeypatch.setattr(stub.store, name, watched)
    return seen


def test_a_sync_handlers_claim_and_outcome_are_written_from_the_handlers_own_thread(
    stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = _watch(stub, monkeypatch, "claim")
    _watch(stub, monkeypatch, "finish", calls)
    tasks = [stub.submit("thread", {"log": str(tmp_path / "r"), "n": n}) for n in range(5)]
    stub.start()
    done = [stub.finished(t.id) for t in tasks]
    assert all(t.status is Status.SUCCEEDED for t in done)
    assert len(calls) == 2 * len(tasks)
    for task in done:
        assert [(c[0], c[2]) for c in calls if c[1] == task.id] == [
            ("claim", task.result["thread"]),
            ("finish", task.result["thread"]),
        ]


def test_a_sync_handlers_last_progress_is_written_before_its_finish(
    stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    calls = _watch(stub, monkeypatch, "record_progress")
    _watch(stub, monkeypatch, "finish", calls)
    task = stub.submit("thread", {"log": str(tmp_path / "r"), "progress": True})
    stub.start()
    done = stub.finished(task.id)
    assert done.status is Status.SUCCEEDED
    assert done.progress is not None and done.progress.fraction == 1.0
    assert [c[0] for c in calls if c[1] == task.id] == ["record_progress", "finish"]


def test_a_timed_out_threads_late_return_writes_nothing(
    stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    finishes = _watch(stub, monkeypatch, "finish")
    log = tmp_path / "r"
    task = stub.submit("block-timeout", {"log": str(log), "seconds": 1.6})  # timeoutSeconds: 1
    stub.start()
    done = stub.finished(task.id)
    assert done.status is Status.FAILED and done.error and done.error.type == "Timeout"
    time.sleep(1.0)  # the handler's thread returns meanwhile
    assert len(runs(log)) == 1
    assert [c for c in finishes if c[1] == task.id] == [finishes[0]]
    later = stub.get(task.id)
    assert later.status is Status.FAILED and later.error and later.error.type == "Timeout"
    assert later.result is None


@pytest.mark.parametrize("task_type", ["count-sync", "count"])
def test_a_submitted_tasks_claim_rests_on_its_messages_copy(
    stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task_type: str
):
    """Sync (one hop) and async handlers alike: the first claim of a task just submitted
    is made on the copy its message carries (the DynamoDB store then reads nothing back)."""
    copies: list[Any] = []
    original = stub.store.claim

    def claim(task_id: str, task_type: str, worker_id: str, at: Any, copy: Any = None) -> Any:
        copies.append(copy)
        return original(task_id, task_type, worker_id, at, copy)

    monkeypatch.setattr(stub.store, "claim", claim)
    task = stub.submit(task_type, {"log": str(tmp_path / "r")})
    stub.start()
    assert stub.finished(task.id).status is Status.SUCCEEDED
    assert len(copies) == 1 and copies[0] is not None
    assert copies[0].task.id == task.id and copies[0].task.payload == task.payload
