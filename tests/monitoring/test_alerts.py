"""The chart's alert rules, checked and unit-tested by promtool (Prometheus's own tool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.render import render, render_values
from tests.monitoring.promql import alert_expressions

HERE = Path(__file__).parent
ALERTS = {
    "ConveyorDeadLetterQueueNotEmpty",
    "ConveyorTaskWaitingTooLong",
    "ConveyorTaskFailureRatioHigh",
    "ConveyorBacklogWithoutWorkers",
    "ConveyorApiErrorRatioHigh",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run `make system-deps` (Debian package prometheus)"
    return path


def _write_rules(directory: Path, values: str = "monitoring") -> Path:
    rule = render(values).one("PrometheusRule")
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_the_rules_are_the_five_alerts() -> None:
    assert set(alert_expressions()) == ALERTS
    assert not render("default").find("PrometheusRule")  # off by default


def test_promtool_check_rules(tmp_path: Path, promtool: str) -> None:
    rules = _write_rules(tmp_path)
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def promtool_test(promtool: str, rules_dir: Path) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` of alerts.test.yaml against the rules.yaml in ``rules_dir``."""
    shutil.copy(HERE / "alerts.test.yaml", rules_dir / "alerts.test.yaml")
    return subprocess.run(
        [promtool, "test", "rules", "alerts.test.yaml"],
        cwd=rules_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_promtool_unit_tests_fire_every_alert(tmp_path: Path, promtool: str) -> None:
    _write_rules(tmp_path)
    cases = yaml.safe_load((HERE / "alerts.test.yaml").read_text())
    fired = {
        check["alertname"]
        for test in cases["tests"]
        for check in test["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert fired == ALERTS, "every alert needs a test case in which it fires"
    result = promtool_test(promtool, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fail_on_a_wrong_threshold(tmp_path: Path, promtool: str) -> None:
    """The same cases against rules with a 50 % failure threshold: the 10 % case must fail."""
    rule = render_values(
        {
            "metrics": {
                "prometheusRule": {"enabled": True, "failureRatio": 0.5, "alertLabels": {"team": "platform"}}
            }
        }
    ).one("PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    result = promtool_test(promtool, tmp_path)
    assert result.returncode != 0 and "ConveyorTaskFailureRatioHigh" in result.stdout + result.stderr
