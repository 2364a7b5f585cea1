"""Handler results the store or a reader cannot take: the task fails for good with a clear
error, the handler runs once, and the record stays readable. A real worker loop, on the
memory adapters (fast) and once on DynamoDB (moto), whose 400 KB item limit is real."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from conveyor import results
from conveyor.engine import Engine, Submission
from conveyor.model import Status
from conveyor.results import MAX_RESULT_BYTES, checked_result, result_room
from tests.conftest import AUTH_HEADERS, WorkerThread, make_settings, wait_for
from tests.support.engines import memory_engine
from worker.handlers import handler
from worker.handlers.context import Context

RESULT_TYPE = """
apiVersion: conveyor.dev/v1alpha1
kind: TaskType
metadata: {name: result}
spec:
  handler: test-result
  maxAttempts: 3
  backoff: {initialSeconds: 0.1, maxSeconds: 0.2}
  timeoutSeconds: 30
"""

RESULTS: dict[str, Any] = {
    "nan": {"x": math.nan},
    "infinity": [1, math.inf],
    "surrogate": {"s": "\ud800"},
    "set": {"s": {1, 2}},
    "huge-int": 10**30,
    "deep": None,  # built below: deeper than jsonsafe.MAX_DEPTH
    "big": "x" * (210 * 1024),
    "control-bytes": "\x01" * (64 * 1024),  # 6 bytes each once escaped
}


def _deep(n: int) -> list:
    value: list = []
    for _ in range(n):
        value = [value]
    return value


RESULTS["deep"] = _deep(100)


@handler("test-result")
def produce(payload: dict[str, Any], ctx: Context) -> Any:
    with open(payload["log"], "a") as f:
        f.write(f"{ctx.attempt}\n")
    if payload["kind"] == "sized":
        return "y" * int(payload["bytes"])
    return RESULTS[payload["kind"]]


@pytest.fixture
def types_dir(tmp_path: Path) -> Path:
    target = tmp_path / "types"
    target.mkdir()
    (target / "result.yaml").write_text(RESULT_TYPE)
    return target


def memory_worker(types_dir: Path) -> tuple[Engine, WorkerThread]:
    settings = make_settings(tasktypes=str(types_dir), poll_wait_seconds=0.2)
    engine = memory_engine(settings, types_dir)
    return engine, WorkerThread(SimpleNamespace(engine=engine, blobs=None))  # type: ignore[arg-type]


def run_to_end(engine: Engine, payload: dict[str, Any]):
    task, _ = engine.submit(Submission("result", payload))
    return wait_for(lambda: (t := engine.get(task.id)).status.terminal and t, timeout=20)


def test_checked_result_refuses_what_cannot_be_stored_or_served():
    for kind in ("nan", "infinity", "surrogate", "set", "huge-int", "deep"):
        value, error = checked_result({}, RESULTS[kind])
        assert value is None and error is not None and error.type == "InvalidResult", kind
    for kind in ("big", "control-bytes"):
        value, error = checked_result({}, RESULTS[kind])
        assert value is None and error is not None and error.type == "ResultTooLarge", kind
    assert checked_result({}, {"t": (1, 2)}) == ({"t": [1, 2]}, None)
    # The default payload limit (256 KiB) leaves the whole cap; a raised one leaves less.
    assert result_room({}) == result_room({"blob": "p" * (256 * 1024)}) == MAX_RESULT_BYTES
    payload = {"blob": "p" * (300 * 1024)}
    assert result_room(payload) < MAX_RESULT_BYTES
    assert checked_result(payload, "r" * (MAX_RESULT_BYTES - 10))[1].type == "ResultTooLarge"  # type: ignore[union-attr]
    assert checked_result({}, "r" * (MAX_RESULT_BYTES - 10))[1] is None
    # What a multi-byte result takes is its UTF-8, as stored, not its \\u escapes.
    assert checked_result({}, "é" * (MAX_RESULT_BYTES // 2 - 10))[1] is None


def assert_readable(engine: Engine) -> None:
    from api.app import create_app

    with TestClient(
        create_app(engine, CollectorRegistry()), raise_server_exceptions=False, headers=AUTH_HEADERS
    ) as client:
        for params in ({}, {"status": "failed"}, {"type": "result"}):
            assert client.get("/v1/tasks", params=params).status_code == 200


@pytest.mark.parametrize("kind", sorted(RESULTS))
def test_a_bad_result_fails_the_task_once_and_for_all(types_dir, tmp_path, kind):
    engine, worker = memory_worker(types_dir)
    worker.start()
    try:
        done = run_to_end(engine, {"kind": kind, "log": str(tmp_path / "runs")})
    finally:
        worker.stop()
    expected = "ResultTooLarge" if kind in ("big", "control-bytes") else "InvalidResult"
    assert done.status is Status.FAILED and done.result is None
    assert done.error.type == expected and done.attempts == 1, done.error
    assert (tmp_path / "runs").read_text() == "1\n"  # never re-run: it would return the same
    assert_readable(engine)


def test_a_finish_the_store_refuses_for_size_is_recorded_as_a_failure(types_dir, tmp_path, monkeypatch):
    """The result passes the worker's own cap (raised here) but not the store's item
    limit: the refused finish becomes a recorded failure, not a retry of the handler."""
    monkeypatch.setattr(results, "MAX_RESULT_BYTES", 10**7)
    monkeypatch.setattr(results, "ITEM_BYTES", 10**7)
    engine, worker = memory_worker(types_dir)
    worker.start()
    try:
        done = run_to_end(engine, {"kind": "sized", "bytes": 500_000, "log": str(tmp_path / "runs")})
    finally:
        worker.stop()
    assert done.status is Status.FAILED and done.result is None and done.error.type == "ResultTooLarge"
    assert done.attempts == 1 and (tmp_path / "runs").read_text() == "1\n"
    assert_readable(engine)


def test_on_dynamodb_a_big_result_and_a_refused_finish_both_fail_the_task(
    settings_factory, types_dir, tmp_path, monkeypatch
):
    from conveyor.bootstrap import build

    rt = build(settings_factory(tasktypes=str(types_dir)))
    worker = WorkerThread(rt).start()
    try:
        capped = run_to_end(rt.engine, {"kind": "big", "log": str(tmp_path / "capped")})
        assert capped.status is Status.FAILED and capped.error.type == "ResultTooLarge"
        # Past the worker's cap, DynamoDB itself refuses the 500 KB item.
        monkeypatch.setattr(results, "MAX_RESULT_BYTES", 10**7)
        monkeypatch.setattr(results, "ITEM_BYTES", 10**7)
        refused = run_to_end(rt.engine, {"kind": "sized", "bytes": 500_000, "log": str(tmp_path / "refused")})
    finally:
        worker.stop()
    assert refused.status is Status.FAILED and refused.result is None
    assert refused.error.type == "ResultTooLarge" and refused.attempts == 1
    assert (tmp_path / "refused").read_text() == "1\n"
    assert rt.engine.get(refused.id).status is Status.FAILED
