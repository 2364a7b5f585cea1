"""PromQL in the chart's alerts and dashboard: extraction, parsing and metric names."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser

from tests.chart.render import CHART, render

# Grafana substitutes these before the query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "2m",
    "$__interval": "30s",
    "$namespace": "tasks",
    "$api": "conveyor-api",
    "$worker": "conveyor-worker",
}
LABEL_VALUES = re.compile(r"^label_values\((?:(?P<query>.+),\s*)?(?P<label>\w+)\)$")


def dashboard() -> dict[str, Any]:
    return json.loads((CHART / "dashboards" / "conveyor.json").read_text())


def grafana_to_promql(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def dashboard_expressions() -> dict[str, str]:
    """Panel title (and ref id) or variable name -> PromQL, variables substituted."""
    board = dashboard()
    out: dict[str, str] = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            out[f"{panel['title']} {target['refId']}"] = grafana_to_promql(target["expr"])
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = LABEL_VALUES.match(variable["query"]["query"])
        assert match and match["query"], variable["query"]
        out[f"${variable['name']}"] = grafana_to_promql(match["query"])
    return out


def alert_expressions() -> dict[str, str]:
    rule = render("monitoring").one("PrometheusRule")
    return {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}


def metric_names(expr: str) -> set[str]:
    """Every metric an expression selects (the real PromQL parser: syntax and types)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            else:
                names.update(m.value for m in node.matchers.matchers if m.name == "__name__")

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names
