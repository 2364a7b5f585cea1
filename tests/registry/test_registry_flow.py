"""The local registry (``make run``, a TaskType directory) refuses the flow-control specs
the operator refuses, so a limit never looks applied locally that a cluster would reject."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conveyor.registry import load_manifests


def _write(directory: Path, name: str, spec: dict) -> None:
    doc = {
        "apiVersion": "conveyor.dev/v1alpha1",
        "kind": "TaskType",
        "metadata": {"name": name},
        "spec": spec,
    }
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(doc))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"concurrency": {"key": "/tenant"}}, "spec.concurrency"),
        ({"concurrency": {"perWorker": 2, "key": "/tenant"}}, "spec.concurrency.key needs"),
        ({"rateLimit": {"limit": 5000}}, "at most 1000 starts a second"),
    ],
)
def test_a_flow_spec_the_operator_refuses_is_not_ready_locally(tmp_path: Path, spec: dict, message: str):
    _write(tmp_path, "limited", {"handler": "echo", **spec})
    entry = load_manifests(tmp_path).get("limited")
    assert entry is not None and not entry.ready and entry.reason == "InvalidSpec"
    assert message in entry.message


def test_a_sound_flow_spec_is_ready_locally(tmp_path: Path):
    _write(
        tmp_path,
        "fine",
        {"handler": "echo", "concurrency": {"max": 2, "key": "/tenant"}, "rateLimit": {"limit": 10}},
    )
    entry = load_manifests(tmp_path).get("fine")
    assert entry is not None and entry.ready and entry.fleet_concurrency is not None
