"""Alerts and dashboard name only metrics the services really export: a real API and a real
worker run a task of every outcome against moto, and both /metrics endpoints are scraped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from conveyor.bootstrap import Runtime, build
from tests.conftest import wait_for
from tests.monitoring.promql import alert_expressions, dashboard_expressions, metric_names
from tests.support.aws_answers import answering, throttle

OUTCOMES = {"succeeded", "failed", "retried", "cancelled"}
# Metrics the alerts read from others, with where they come from (checked against the
# exporter's source, not guessed).
EXTERNAL = {
    "up": "Prometheus, for every scrape target",
    "keda_scaler_detail_errors_total": "KEDA operator, pkg/metricscollector/prommetrics.go (KEDA 2.14+)",
}


def _sample_names(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def _submit(api: TestClient, body: dict[str, Any]) -> str:
    response = api.post("/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _status(api: TestClient, task_id: str) -> str:
    return str(api.get(f"/v1/tasks/{task_id}").json()["status"])


def test_alerts_and_dashboard_use_only_exported_metrics(
    api: TestClient, start_worker: Callable[..., Any], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = start_worker()
    # The processes count AWS's throttled answers into their registry, as api/main.py and
    # worker/main.py build them; moto never throttles, so one call is answered as DynamoDB
    # answers a hot index key.
    counted = build(runtime.settings, metrics=worker.metrics_registry)
    monkeypatch.setattr("botocore.endpoint.time.sleep", lambda _: None)
    hot_key = throttle("IndexWriteKeyRangeThroughputExceeded")
    with answering(counted.backend.dynamodb, [hot_key]), pytest.raises(ClientError):
        counted.backend.dynamodb.describe_table(TableName=runtime.settings.table)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=worker.metrics_registry)
    try:
        ok = _submit(api, {"type": "echo", "payload": {"hello": "metrics"}})
        failed = _submit(api, {"type": "fail", "payload": {"message": "no", "permanent": True}})
        retried = _submit(api, {"type": "fail", "payload": {"message": "again"}, "max_attempts": 2})
        slow = _submit(api, {"type": "sleep", "payload": {"seconds": 60}})
        wait_for(lambda: _status(api, slow) == "running")
        assert api.post(f"/v1/tasks/{slow}/cancel").status_code in (200, 202)
        for task_id, final in (
            (ok, "succeeded"),
            (failed, "failed"),
            (retried, "failed"),
            (slow, "cancelled"),
        ):
            wait_for(lambda task_id=task_id, final=final: _status(api, task_id) == final, timeout=30)

        _fire_a_schedule(api)
        worker_text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).text
        api_text = api.get("/metrics").text
    finally:
        server.shutdown()
        thread.join(5)

    outcomes = {
        sample.labels["outcome"]
        for family in text_string_to_metric_families(worker_text)
        for sample in family.samples
        if sample.name == "conveyor_tasks_finished_total"
    }
    assert outcomes == OUTCOMES
    exported = _sample_names(worker_text) | _sample_names(api_text)
    used = {
        name: metric_names(expr) for name, expr in {**alert_expressions(), **dashboard_expressions()}.items()
    }
    known = exported | set(EXTERNAL)
    unknown = {name: sorted(names - known) for name, names in used.items() if names - known}
    assert not unknown, f"queries name metrics nobody exports: {unknown}"
    # And every Conveyor metric the services export shows up somewhere (a histogram counts
    # as shown when any of its _bucket/_sum/_count series is).
    shown = {_family(n) for names in used.values() for n in names}
    unshown = {
        _family(n) for n in exported if n.startswith("conveyor_") and not n.endswith("_created")
    } - shown
    assert not unshown, f"exported but on no panel or alert: {sorted(unshown)}"


def _fire_a_schedule(api: TestClient) -> None:
    """The API's firing loop fires one slot (its clock driven), into the API's registry."""
    from datetime import UTC, datetime, timedelta

    from conveyor.schedule import ScheduleSpec
    from conveyor.scheduler import Scheduler

    at = [datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)]
    spec = ScheduleSpec("metrics", "default", "echo", {"hello": "schedule"}, "* * * * *")
    app: Any = api.app
    firing = Scheduler(
        app.state.conveyor.engine, lambda: [spec], metrics=app.state.scheduler.metrics, clock=lambda: at[0]
    )
    firing.tick()
    at[0] += timedelta(minutes=1)
    assert [f.outcome for f in firing.tick()] == ["submitted"]


def _family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name
