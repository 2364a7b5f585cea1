"""The workers' CPU HPA when KEDA is off (never next to a ScaledObject), and an API
PodDisruptionBudget that never blocks a node drain."""

from __future__ import annotations

import math
from typing import Any

import helm_python as helm
import pytest

from tests.chart.render import CHART, RELEASE, render, render_values, values_files
from tests.chart.test_keda import ci_values, render_ci

HPA_VALUES = {"worker": {"keda": {"enabled": False}, "autoscaling": {"enabled": True}}}


def _all_renders() -> list[tuple[str, Any]]:
    return [(n, render(n)) for n in ["default", *values_files()]] + [(n, render_ci(n)) for n in ci_values()]


# -- HPA -----------------------------------------------------------------------------------


def test_a_cpu_hpa_scales_the_workers_when_keda_is_off() -> None:
    rendered = render_ci("worker-hpa")
    hpa = rendered.one("HorizontalPodAutoscaler")
    deployment = rendered.one("Deployment", hpa["spec"]["scaleTargetRef"]["name"])
    assert deployment["metadata"]["name"] == f"{RELEASE}-worker"
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{RELEASE}-worker",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
        }
    ]
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 900}}
    # The HPA owns the replica count, like KEDA's.
    assert "replicas" not in deployment["spec"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"]
    assert not rendered.find("ScaledObject") and not rendered.find("TriggerAuthentication")
    assert "Workers: a CPU HPA, 2..6 pods (KEDA off)" in rendered.notes


def test_no_hpa_by_default_and_never_next_to_a_scaled_object() -> None:
    assert not render("default").find("HorizontalPodAutoscaler")
    assert render("keda-off").one("Deployment", f"{RELEASE}-worker")["spec"]["replicas"] == 3
    for name, rendered in _all_renders():
        assert not (rendered.find("HorizontalPodAutoscaler") and rendered.find("ScaledObject")), name


@pytest.mark.parametrize(
    ("values", "needles"),
    [
        (
            {"worker": {"autoscaling": {"enabled": True}}},
            ["worker.autoscaling.enabled=true", "worker.keda.enabled=false"],
        ),
        (
            {
                **HPA_VALUES,
                "worker": {
                    **HPA_VALUES["worker"],
                    "resources": {"requests": {"cpu": None}},  # null removes the default
                },
            },
            ["worker.resources.requests.cpu"],
        ),
        (
            {
                "worker": {
                    "keda": {"enabled": False},
                    "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2},
                }
            },
            ["worker.autoscaling.minReplicas", "maxReplicas"],
        ),
    ],
)
def test_hpa_combinations_that_cannot_work_fail(values: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render_values(values)
    for needle in needles:
        assert needle in str(caught.value)


def test_hpa_values_are_typed() -> None:
    wrong: list[dict[str, Any]] = [
        {"worker": {"autoscaling": {"targetCPUUtilizationPercentage": 0}}},
        {"worker": {"autoscaling": {"minReplicas": 0}}},
        {"worker": {"autoscaling": {"behavior": {"scaleDown": {"selectPolicy": "Lowest"}}}}},
    ]
    with helm.Chart.load(CHART) as chart:
        for bad in wrong:
            with pytest.raises(helm.HelmError):
                chart.validate_schema(chart.merge_values(bad))


# -- API PodDisruptionBudget -----------------------------------------------------------------


def _evictable(pdb: dict[str, Any], replicas: int) -> int:
    """Pods the disruption controller lets go at once (percentages round up, as in
    pkg/controller/disruption: GetScaledValueFromIntOrPercent(..., roundUp=true))."""

    def scaled(value: int | str) -> int:
        if isinstance(value, str) and value.endswith("%"):
            return math.ceil(replicas * int(value[:-1]) / 100)
        return int(value)

    spec = pdb["spec"]
    if "maxUnavailable" in spec:
        return min(replicas, scaled(spec["maxUnavailable"]))
    return max(0, replicas - scaled(spec["minAvailable"]))


def test_the_api_pdb_always_lets_a_drain_evict_a_pod() -> None:
    default = render("default").one("PodDisruptionBudget")
    assert default["spec"]["maxUnavailable"] == 1 and "minAvailable" not in default["spec"]
    for name, rendered in _all_renders():
        for pdb in rendered.find("PodDisruptionBudget"):
            replicas = rendered.values.get("api", {}).get("replicaCount", 2)
            assert _evictable(pdb, replicas) >= 1, name
    single = render_ci("worker-hpa")
    assert _evictable(single.one("PodDisruptionBudget"), 1) == 1


@pytest.mark.parametrize(
    ("replicas", "pdb", "allowed"),
    [
        (1, {"minAvailable": 1}, False),  # the old default with one replica
        (2, {"minAvailable": 1}, True),
        (3, {"minAvailable": 3}, False),
        (2, {"minAvailable": "50%"}, True),
        (1, {"minAvailable": "50%"}, False),  # rounds up to 1 of 1
        (3, {"minAvailable": "100%"}, False),
        (1, {"maxUnavailable": 1}, True),
        (3, {"maxUnavailable": 0}, False),
        (3, {"maxUnavailable": "0%"}, False),
        (1, {"maxUnavailable": "10%"}, True),  # rounds up to 1
    ],
)
def test_a_pdb_that_blocks_every_eviction_fails(replicas: int, pdb: dict[str, Any], allowed: bool) -> None:
    values = {"api": {"replicaCount": replicas, "pdb": pdb}}
    if allowed:
        rendered = render_values(values).one("PodDisruptionBudget")
        assert _evictable(rendered, replicas) >= 1
        return
    with pytest.raises(helm.HelmError) as caught:
        render_values(values)
    for needle in ("api.pdb", f"api.replicaCount={replicas}", "node drain", "api.pdb.maxUnavailable"):
        assert needle in str(caught.value)


def test_min_available_replaces_max_unavailable_and_one_is_needed() -> None:
    # A minAvailable kept from older values wins over the new default maxUnavailable.
    spec = render_values({"api": {"replicaCount": 3, "pdb": {"minAvailable": 2}}}).one("PodDisruptionBudget")[
        "spec"
    ]
    assert spec["minAvailable"] == 2 and "maxUnavailable" not in spec
    with pytest.raises(
        helm.HelmError, match=r"set api\.pdb\.maxUnavailable \(default 1\) or api\.pdb\.minAvailable"
    ):
        render_values({"api": {"pdb": {"minAvailable": "", "maxUnavailable": ""}}})
    assert not render_values({"api": {"pdb": {"enabled": False}}}).find("PodDisruptionBudget")
