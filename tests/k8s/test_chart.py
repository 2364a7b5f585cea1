"""The chart's side of the TaskType registry: the operator owns the ConfigMap (the chart never
renders it, so offline renders cannot reset it), pods mount it optionally, and handler
modules reach every process that needs them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from conveyor.registry import RegistryWatcher
from tests.chart.render import CHART, env_of, pod_specs, render_values

RELEASE, NAMESPACE = "conveyor", "tasks"
REGISTRY = f"{RELEASE}-tasktypes"


def _containers(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for _, spec in pod_specs(render_values(values)) for c in spec["containers"]}


def _raw(values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return dict(chart.render(values, name=RELEASE, namespace=NAMESPACE))


@pytest.mark.parametrize("operator", [True, False])
def test_the_chart_never_renders_the_registry_configmap(operator: bool):
    rendered = render_values({"operator": {"enabled": operator}, "metrics": {"dashboard": {"enabled": True}}})
    assert [o for o in rendered.objects if o["metadata"]["name"] == REGISTRY] == []
    assert not any("lookup" in p.read_text() for p in (CHART / "templates").rglob("*tasktypes*"))


def test_offline_renders_are_byte_identical_for_everything_that_touches_the_registry():
    """`helm template` and Argo CD render without a cluster: twice must give the same bytes
    (tests/chart/test_gitops.py holds the same for every values file)."""
    first, second = _raw({}), _raw({})
    assert first.keys() == second.keys()
    assert [t for t in first if first[t] != second[t]] == []


@pytest.mark.parametrize("mode", ["deployment", "scaledJob"])
def test_every_pod_mounts_the_registry_optionally_by_the_operators_name(mode: str):
    rendered = render_values({"worker": {"mode": mode}})
    operator = next(c for _, s in pod_specs(rendered) for c in s["containers"] if c["name"] == "operator")
    assert env_of(operator)["CONVEYOR_CONFIGMAP"] == REGISTRY
    role = rendered.one("Role", f"{RELEASE}-operator")
    assert [r["resourceNames"] for r in role["rules"] if r.get("resourceNames")] == [[REGISTRY]]
    mounted = 0
    for name, spec in pod_specs(rendered):
        for volume in spec.get("volumes", []):
            if volume["name"] == "tasktypes":
                # optional: pods start before the operator has created it
                assert volume["configMap"] == {"name": REGISTRY, "optional": True}, name
                container = spec["containers"][0]
                mount = next(m for m in container["volumeMounts"] if m["name"] == "tasktypes")
                assert "subPath" not in mount and mount["readOnly"] is True  # subPath never updates
                assert env_of(container)["CONVEYOR_TASKTYPES"] == mount["mountPath"]
                mounted += 1
    assert mounted == 2  # api and worker


def test_a_pod_started_before_the_configmap_picks_it_up_when_kubelet_writes_it(tmp_path: Path):
    """An optional ConfigMap volume starts as an empty directory; kubelet later writes a
    timestamped directory and the ..data symlink, as for any update."""
    watcher = RegistryWatcher(tmp_path, interval=0)
    assert len(watcher.current()) == 0
    stamp = tmp_path / "..2026_01_01_00_00_00.1"
    stamp.mkdir()
    (stamp / "tasktypes.json").write_text(
        json.dumps(
            {"apiVersion": "conveyor.dev/v1alpha1", "taskTypes": [{"name": "echo", "handler": "echo"}]}
        )
    )
    os.symlink(stamp.name, tmp_path / "..data")
    os.symlink("..data/tasktypes.json", tmp_path / "tasktypes.json")
    assert list(watcher.current()) == ["echo"]


def test_handler_modules_reach_the_workers_and_the_operator():
    modules = ["acme_handlers.avatars", "acme.reports"]
    for mode in ("deployment", "scaledJob"):
        containers = _containers({"handlers": {"modules": modules}, "worker": {"mode": mode}})
        for name in ("worker", "operator"):
            assert (
                env_of(containers[name])["CONVEYOR_HANDLER_MODULES"] == "acme_handlers.avatars,acme.reports"
            )
        # The API runs no handlers (it never imports the worker package).
        assert "CONVEYOR_HANDLER_MODULES" not in env_of(containers["api"])
    for container in _containers({}).values():
        assert "CONVEYOR_HANDLER_MODULES" not in env_of(container)


@pytest.mark.usefixtures("custom_handler_modules")
def test_the_operator_reads_handler_modules_like_the_workers():
    """The operator checks handlers with worker.handlers.names(), which imports
    CONVEYOR_HANDLER_MODULES: the variable the chart sets is the one that is read."""
    from worker import handlers

    assert "custom-thing" in handlers.names()


@pytest.mark.parametrize("modules", [["not a module"], "acme.avatars", [""], ["acme..x"]])
def test_bad_handler_modules_are_refused_by_the_schema(modules: Any):
    with pytest.raises(helm.HelmError, match="modules"):
        render_values({"handlers": {"modules": modules}})


def test_the_operator_checks_schedule_payloads_against_the_apis_limit():
    """A TaskSchedule whose payload the API would refuse (413) must not be Ready: the
    operator reads the same limit the API does."""
    containers = _containers({"config": {"maxPayloadBytes": 4096}})
    assert env_of(containers["operator"])["CONVEYOR_MAX_PAYLOAD_BYTES"] == "4096"
    assert env_of(containers["api"])["CONVEYOR_MAX_PAYLOAD_BYTES"] == "4096"
