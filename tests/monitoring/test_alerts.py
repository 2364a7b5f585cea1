"""The chart's alert rules, checked and unit-tested by promtool (Prometheus's own tool)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.render import CHART, ROOT, render, render_values
from tests.monitoring.promql import alert_expressions

HERE = Path(__file__).parent
ALERTS = {
    "ConveyorDeadLetterQueueNotEmpty",
    "ConveyorTaskWaitingTooLong",
    "ConveyorTaskFailureRatioHigh",
    "ConveyorBacklogWithoutWorkers",
    "ConveyorApiErrorRatioHigh",
    "ConveyorApiDown",
    "ConveyorWorkerDown",
    "ConveyorKedaScalerErrors",
    "ConveyorScheduleMissed",
    "ConveyorAwsThrottled",
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


def test_the_rules_are_the_chart_alerts() -> None:
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
    checks = [check for test in cases["tests"] for check in test["alert_rule_test"]]
    fired = {check["alertname"] for check in checks if check["exp_alerts"]}
    quiet = {check["alertname"] for check in checks if not check["exp_alerts"]}
    assert fired == ALERTS, "every alert needs a test case in which it fires"
    assert quiet == ALERTS, "every alert needs a test case in which it does not fire"
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


def _github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped,
    spaces to hyphens, repeats numbered."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def test_every_alert_links_to_its_runbook_section() -> None:
    runbook = ROOT / "docs" / "RUNBOOK.md"
    anchors = _github_anchors(runbook.read_text())
    default = yaml.safe_load((CHART / "values.yaml").read_text())["metrics"]["prometheusRule"]["runbookUrl"]
    rule = render("monitoring").one("PrometheusRule")
    for alert in (r for group in rule["spec"]["groups"] for r in group["rules"]):
        url = alert["annotations"].get("runbook_url", "")
        page, _, anchor = url.partition("#")
        assert page == default and page.endswith("/docs/RUNBOOK.md"), (alert["alert"], url)
        assert anchor in anchors, f"{alert['alert']}: no heading for #{anchor} in docs/RUNBOOK.md"
        assert anchor == alert["alert"].lower()
    # A runbook of your own (an internal wiki) replaces the base, anchors kept.
    own = render_values(
        {"metrics": {"prometheusRule": {"enabled": True, "runbookUrl": "https://wiki.example.com/conveyor"}}}
    ).one("PrometheusRule")
    urls = {r["annotations"]["runbook_url"] for group in own["spec"]["groups"] for r in group["rules"]}
    assert all(u.startswith("https://wiki.example.com/conveyor#conveyor") for u in urls)


def _rules(values: dict) -> dict[str, dict]:
    rule = render_values({"metrics": {"prometheusRule": {"enabled": True}}, **values}).one("PrometheusRule")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


@pytest.mark.parametrize(
    ("worker", "expect_absent"),
    [
        ({}, False),  # KEDA may scale the workers to zero: no target is normal
        ({"keda": {"minReplicaCount": 1}}, True),
        ({"keda": {"enabled": False}}, True),
        ({"mode": "scaledJob"}, False),  # Jobs come and go
    ],
)
def test_a_missing_worker_target_alerts_only_when_workers_must_run(worker: dict, expect_absent: bool) -> None:
    expr = _rules({"worker": worker})["ConveyorWorkerDown"]["expr"]
    assert ("absent(up{" in expr) is expect_absent, expr


def test_the_keda_alert_exists_only_with_keda() -> None:
    assert "ConveyorKedaScalerErrors" in _rules({})
    assert "ConveyorKedaScalerErrors" not in _rules({"worker": {"keda": {"enabled": False}}})
    scaled_job = _rules({"worker": {"mode": "scaledJob"}})["ConveyorKedaScalerErrors"]["expr"]
    # KEDA labels a ScaledJob's scaler errors with its name under `scaledObject` as well.
    assert 'scaledObject="conveyor-worker"' in scaled_job
