"""Scan several renders with checkov's Kubernetes runner in one process.

Run as ``python -m tests.chart.checkov_scan`` with a JSON list of jobs on stdin, each
``{"name", "directory", "skip"}``; prints ``{name: report}`` as JSON, each report the dict
``checkov --output json --quiet`` prints. checkov's start-up (importing every framework and
loading its policies) costs seconds; paying it once instead of once per render is the point.

Each render gets a fresh Runner: a Runner keeps the definitions and graph of its first run
and would scan them again, so one render's NetworkPolicy would stand in for another's gap.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from checkov.kubernetes.runner import Runner
from checkov.runner_filter import RunnerFilter


def scan(directory: str, skip: list[str]) -> dict[str, Any]:
    runner_filter = RunnerFilter(framework=["kubernetes"], skip_checks=skip, show_progress_bar=False)
    report = Runner().run(root_folder=directory, runner_filter=runner_filter)
    assert not isinstance(report, list)
    return report.get_dict(is_quiet=True)


def main() -> None:
    jobs = json.load(sys.stdin)
    json.dump({job["name"]: scan(job["directory"], job["skip"]) for job in jobs}, sys.stdout)


if __name__ == "__main__":
    main()
