"""checkov's Kubernetes policies over every render of the matrix, in one run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.chart.render import render, values_files

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


def test_checkov_finds_no_failed_check(tmp_path: Path) -> None:
    for name in ["default", *values_files()]:
        docs = render(name).objects
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    checkov = Path(sys.executable).with_name("checkov")
    result = subprocess.run(
        [
            str(checkov),
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--skip-check",
            ",".join(SKIPPED),
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    summary = report["summary"]
    assert summary["resource_count"] >= 50 and summary["passed"] > 500, summary
