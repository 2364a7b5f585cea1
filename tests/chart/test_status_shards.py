"""The status shard count (conveyor/aws/shards.py) reaches every process that writes or
reads task statuses, the same in each: a process with another count would write statuses
the others' lists do not read."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from conveyor.settings import MAX_STATUS_SHARDS
from tests.chart.render import CHART, env_of, pod_specs, render_values


def test_every_process_that_reads_the_table_gets_the_same_shard_count() -> None:
    rendered = render_values({"aws": {"statusShards": 8}, "init": {"enabled": True}})
    counts = [
        env_of(container).get("CONVEYOR_STATUS_SHARDS")
        for _, pod in pod_specs(rendered)
        for container in pod["containers"]
        if "CONVEYOR_TABLE" in env_of(container)
    ]
    assert len(counts) >= 3 and set(counts) == {"8"}  # api, worker, init


@pytest.mark.parametrize("bad", [0, MAX_STATUS_SHARDS + 1, "4", 1.5])
def test_the_shard_count_is_a_whole_number_the_processes_accept(bad: Any) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError):
        chart.validate_schema(chart.merge_values({"aws": {"statusShards": bad}}))
