"""checkov's Kubernetes policies, one run per render of the matrix: its graph checks
(a pod with no NetworkPolicy, ...) join objects across the files of one run, so one
render's NetworkPolicy must never stand in for another render's gap."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import render, values_files

MATRIX = ["default", *values_files()]

# Checks the chart cannot meet by default, each with the reason (docs/KUBERNETES.md repeats
# them). Per-resource exceptions live on the resources as checkov.io/skip annotations.
SKIPPED = {
    # IfNotPresent with immutable tags or digests is the right policy; Always costs a registry
    # round trip per pod start and an outage when the registry is down. image.pullPolicy sets it.
    "CKV_K8S_15": "Image Pull Policy should be Always",
    # A chart cannot know the digest of an image built later; image.digest pins one, and
    # test_image_by_digest proves every container then uses it.
    "CKV_K8S_43": "Image should use digest",
}
# NetworkPolicies are opt-in (networkPolicy.enabled): a render without them has pods no
# policy selects, by the user's choice. Renders that enable them must pass this check.
NO_NETWORK_POLICY = {"CKV2_K8S_6": "Minimize the admission of pods which lack an associated NetworkPolicy"}


def skipped_for(name: str) -> dict[str, str]:
    enabled = render(name).values.get("networkPolicy", {}).get("enabled", False)
    return SKIPPED if enabled else {**SKIPPED, **NO_NETWORK_POLICY}


def _checkov(jobs: list[tuple[str, list[dict[str, Any]], dict[str, str]]]) -> dict[str, dict[str, Any]]:
    """checkov's Kubernetes runner over each render, one directory and one fresh run per
    render, all in one process: its start-up is most of a run, so it is paid once."""
    with tempfile.TemporaryDirectory() as root:
        spec = []
        for index, (name, docs, skipped) in enumerate(jobs):
            directory = Path(root) / str(index)
            directory.mkdir()
            (directory / "render.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
            spec.append({"name": name, "directory": str(directory), "skip": sorted(skipped)})
        result = subprocess.run(
            [sys.executable, "-m", "tests.chart.checkov_scan"],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=300,
            cwd=Path(__file__).parents[2],
        )
    assert result.returncode == 0, result.stderr[-2000:]
    reports: dict[str, dict[str, Any]] = json.loads(result.stdout)
    for name, docs, _ in jobs:
        report = reports[name]
        assert isinstance(report, dict) and "results" in report, str(report)[:500]
        report["object_count"] = len(docs)
    return reports


# The hardened render without its NetworkPolicies: proves the check is live in a run of
# one render, and that those policies are what satisfies it.
NO_POLICIES = "hardened, NetworkPolicies removed"


@pytest.fixture(scope="module")
def reports() -> dict[str, dict[str, Any]]:
    jobs = [(name, render(name).objects, skipped_for(name)) for name in MATRIX]
    stripped = [o for o in render("hardened").objects if o["kind"] != "NetworkPolicy"]
    jobs.append((NO_POLICIES, stripped, SKIPPED))
    return _checkov(jobs)


@pytest.mark.parametrize("name", MATRIX)
def test_checkov_finds_no_failed_check(name: str, reports: dict[str, dict[str, Any]]) -> None:
    report = reports[name]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    summary = report["summary"]
    # Every object was looked at, not dropped for a parse problem.
    assert summary["resource_count"] >= report["object_count"] - 1, summary
    assert summary["passed"] > 10 * report["object_count"], summary


def test_the_network_policy_check_is_live_where_policies_are_on(reports: dict[str, dict[str, Any]]) -> None:
    assert "CKV2_K8S_6" not in skipped_for("hardened")
    failed = {c["check_id"] for c in reports[NO_POLICIES]["results"]["failed_checks"]}
    assert "CKV2_K8S_6" in failed
