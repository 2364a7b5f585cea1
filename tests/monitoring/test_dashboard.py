"""The Grafana dashboard: shipped for the sidecar, every query parses in Prometheus."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.chart.render import render
from tests.monitoring.promql import dashboard, dashboard_expressions, metric_names

# What the dashboard must show (issue 4), as panel titles.
PANELS = {
    "Throughput",
    "Outcomes",
    "Task duration",
    "Queue wait",
    "Queue depth",
    "In flight",
    "Workers",
    "API latency",
}


def test_the_dashboard_configmap_is_labelled_for_the_grafana_sidecar() -> None:
    assert not render("default").find("ConfigMap", "conveyor-dashboard")  # off by default
    configmap = render("monitoring").one("ConfigMap", "conveyor-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Conveyor"}
    assert json.loads(configmap["data"]["conveyor.json"]) == dashboard()
    assert render("hardened").one("ConfigMap", "conveyor-dashboard")["metadata"]["namespace"] == "monitoring"


def test_the_dashboard_shows_what_operators_need() -> None:
    board = dashboard()
    titles = {p["title"] for p in board["panels"]}
    assert titles >= PANELS, PANELS - titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            # Every query is scoped to one release: its namespace and its job.
            assert 'namespace="$namespace"' in target["expr"], (panel["title"], target["expr"])
            assert 'job="$api"' in target["expr"] or 'job="$worker"' in target["expr"], target["expr"]


def test_every_query_parses(tmp_path: Path) -> None:
    expressions = dashboard_expressions()
    for name, expr in expressions.items():
        assert metric_names(expr), name
    # And Prometheus's own parser agrees: the queries as recording rules through promtool.
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make system-deps`"
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(expressions.values())]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
