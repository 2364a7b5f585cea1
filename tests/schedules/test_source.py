"""Schedules load from schedules.json beside tasktypes.json (the operator's ConfigMap), or
from TaskSchedule YAML among the TaskType manifests; the watcher follows changes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from conveyor.schedule_source import ScheduleWatcher, load

ITEM = {
    "name": "nightly-report",
    "namespace": "tasks",
    "taskType": "data-export",
    "payload": {"format": "csv"},
    "schedule": "0 2 * * *",
    "timeZone": "Europe/Paris",
    "jitterSeconds": 0,
    "concurrencyPolicy": "Allow",
    "startingDeadlineSeconds": 300,
    "maxCatchUp": 1,
    "suspend": False,
    "maxAttempts": None,
    "ready": True,
    "reason": "",
}


def write_configmap(root: Path, version: str, schedules: list[dict]) -> None:
    """Lay files out as kubelet does: <root>/..data -> a timestamped dir, swapped atomically."""
    data = root / version
    data.mkdir()
    (data / "tasktypes.json").write_text(json.dumps({"apiVersion": "conveyor.dev/v1alpha1", "taskTypes": []}))
    doc = {"apiVersion": "conveyor.dev/v1alpha1", "schedules": schedules}
    (data / "schedules.json").write_text(json.dumps(doc))
    tmp = root / "..data_tmp"
    tmp.symlink_to(version)
    os.replace(tmp, root / "..data")
    for name in ("tasktypes.json", "schedules.json"):
        if not (root / name).is_symlink():
            (root / name).symlink_to(Path("..data") / name)


def test_the_contract_document_loads_and_bad_items_are_left_out(tmp_path: Path) -> None:
    not_ready = ITEM | {"name": "broken", "ready": False, "reason": "UnknownTaskType: no type x"}
    bad = ITEM | {"name": "bad", "concurrencyPolicy": "Sometimes"}
    write_configmap(tmp_path, "v1", [ITEM, not_ready, bad, ITEM])
    specs = load(tmp_path)
    assert [s.name for s in specs] == ["broken", "nightly-report"]
    nightly = specs[1]
    assert nightly.to_json() == ITEM and nightly.key == "tasks/nightly-report"
    assert not specs[0].ready and specs[0].reason.startswith("UnknownTaskType")
    # A registry directory with no schedules.json has no schedules (an older operator).
    (tmp_path / "schedules.json").unlink()
    assert load(tmp_path) == []


def test_the_watcher_follows_a_configmap_swap(tmp_path: Path) -> None:
    write_configmap(tmp_path, "v1", [ITEM])
    watcher = ScheduleWatcher(tmp_path, interval=0.0)
    assert [s.schedule for s in watcher.current()] == ["0 2 * * *"]
    write_configmap(tmp_path, "v2", [ITEM | {"schedule": "@hourly"}])
    assert [s.schedule for s in watcher.current()] == ["@hourly"]
    # An unreadable document keeps the last good schedules.
    (tmp_path / "v2" / "schedules.json").write_text("{not json")
    time.sleep(0.01)
    assert [s.schedule for s in watcher.current()] == ["@hourly"]


def test_yaml_manifests_load_in_namespace_default_checked_like_the_operator(tmp_path: Path) -> None:
    (tmp_path / "types.yaml").write_text("kind: TaskType\nmetadata: {name: echo}\nspec: {handler: echo}\n")
    (tmp_path / "s.yaml").write_text(
        "kind: TaskSchedule\nmetadata: {name: a}\nspec: {taskType: echo, schedule: '*/5 * * * *'}\n---\n"
        "kind: TaskSchedule\nmetadata: {name: b}\nspec: {taskType: echo, schedule: 'every day'}\n---\n"
        "kind: TaskSchedule\nmetadata: {name: c}\n"
        "spec: {taskType: echo, schedule: '* * * * *', jitterSeconds: -1}\n"
    )
    specs = {s.name: s for s in load(tmp_path)}
    assert set(specs) == {"a", "b"}  # c's spec is not one: left out
    assert specs["a"].namespace == "default" and specs["a"].ready
    assert not specs["b"].ready and specs["b"].reason.startswith("schedule:")
