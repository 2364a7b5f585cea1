"""What Helm users expect of a chart: envFrom and extra volumes on every pod, TaskType rights
aggregated into the built-in roles, and Prometheus-operator objects only where the cluster
has their API."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart.render import CHART, RELEASE, pod_specs, render, render_values

EXTRAS: dict[str, list[dict[str, Any]]] = {
    "envFrom": [{"configMapRef": {"name": "proxy-settings"}}, {"secretRef": {"name": "handler-keys"}}],
    "extraVolumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
    "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": True}],
}


def _container(rendered: Any, component: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for _name, spec in pod_specs(rendered):
        for container in spec["containers"]:
            if container["name"] == component:
                return spec, container
    raise AssertionError(f"no {component} container")


@pytest.mark.parametrize("mode", ["deployment", "scaledJob"])
@pytest.mark.parametrize("component", ["api", "worker", "operator"])
def test_env_from_and_extra_volumes_reach_each_pod(component: str, mode: str) -> None:
    values = {
        component: EXTRAS,
        "worker": {"mode": mode, **(EXTRAS if component == "worker" else {})},
        "aws": {"credentials": {"existingSecret": "aws-keys"}},
    }
    rendered = render_values(values)
    spec, container = _container(rendered, component)
    aws: list[dict[str, Any]] = [{"secretRef": {"name": "aws-keys"}}] if component != "operator" else []
    # The AWS keys stay first (the operator never gets them), the user's sources follow.
    assert container["envFrom"] == aws + EXTRAS["envFrom"]
    assert spec["volumes"][-1] == EXTRAS["extraVolumes"][0]
    assert container["volumeMounts"][-1] == EXTRAS["extraVolumeMounts"][0]
    # The chart's own volumes stay.
    assert {"tmp"} <= {v["name"] for v in spec["volumes"]}
    # And nothing leaks into the other components.
    for other in {"api", "worker", "operator"} - {component}:
        other_spec, other_container = _container(rendered, other)
        assert "ca" not in {v["name"] for v in other_spec["volumes"]}
        assert EXTRAS["envFrom"][0] not in other_container.get("envFrom", [])


def test_no_extras_by_default() -> None:
    rendered = render("default")
    for component in ("api", "worker", "operator"):
        spec, container = _container(rendered, component)
        assert "envFrom" not in container
        assert {v["name"] for v in spec["volumes"]} <= {"tmp", "tasktypes", "auth"}


def test_aggregated_cluster_roles_are_off_by_default() -> None:
    assert not render("default").find("ClusterRole")


def test_aggregated_cluster_roles_extend_edit_admin_and_view() -> None:
    # Every CRD of the chart: TaskTypes and TaskSchedules.
    crds = [yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))]
    assert len(crds) == 2
    [group] = {crd["spec"]["group"] for crd in crds}
    plurals = sorted((crd["spec"]["names"]["plural"] for crd in crds), reverse=True)
    assert plurals == ["tasktypes", "taskschedules"]
    assert all("status" in v["subresources"] for crd in crds for v in crd["spec"]["versions"])
    roles = {r["metadata"]["name"]: r for r in render("hardened").find("ClusterRole")}
    assert set(roles) == {f"tasks-{RELEASE}-tasktypes-edit", f"tasks-{RELEASE}-tasktypes-view"}
    edit, view = roles[f"tasks-{RELEASE}-tasktypes-edit"], roles[f"tasks-{RELEASE}-tasktypes-view"]
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k, v in edit["metadata"]["labels"].items() if k.startswith(aggregate) and v == "true"} == {
        f"{aggregate}edit",
        f"{aggregate}admin",
    }
    assert {k for k in view["metadata"]["labels"] if k.startswith(aggregate)} == {f"{aggregate}view"}
    assert edit["rules"] == [
        {
            "apiGroups": [group],
            "resources": plurals,
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"],
        }
    ]
    # Status is written by the operator and the API only: `edit` may not forge it.
    assert view["rules"] == [
        {
            "apiGroups": [group],
            "resources": [r for p in plurals for r in (p, f"{p}/status")],
            "verbs": ["get", "list", "watch"],
        }
    ]
    # Cluster-scoped objects: no namespace, and names that differ between two releases of
    # the same name in two namespaces.
    other = render_values({"rbac": {"aggregateClusterRoles": True}}, namespace="staging")
    assert all("namespace" not in r["metadata"] for r in roles.values())
    assert not set(roles) & {r["metadata"]["name"] for r in other.find("ClusterRole")}


MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@pytest.mark.parametrize("name", ["monitoring", "podmonitor", "hardened"])
def test_prometheus_operator_objects_only_where_their_api_exists(name: str) -> None:
    from tests.chart.render import load_values

    with_api = render(name)
    expected = with_api.kinds() & MONITORING_KINDS
    assert expected, "the values file enables some Prometheus-operator object"
    assert "SKIPPED" not in with_api.notes
    without = render_values(load_values(name), api_versions=("keda.sh/v1alpha1",))
    assert not without.kinds() & MONITORING_KINDS
    assert "SKIPPED:" in without.notes and "--api-versions monitoring.coreos.com/v1" in without.notes
    for kind in expected:
        key = kind[0].lower() + kind[1:]
        assert f"metrics.{key}" in without.notes
    # Everything else is the same either way.
    assert without.kinds() == with_api.kinds() - MONITORING_KINDS


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"rbac": {"aggregateClusterRoles": "yes"}}, "aggregateClusterRoles"),
        ({"rbac": {"aggregateClusterRole": True}}, "aggregateClusterRole"),
        ({"api": {"envFrom": {"configMapRef": {"name": "x"}}}}, "envFrom"),  # a list, not a map
        ({"worker": {"extraVolumes": ["ca"]}}, "extraVolumes"),
        ({"metrics": {"prometheusRule": {"runbookUrl": "https://wiki/runbook#top"}}}, "runbookUrl"),
        ({"metrics": {"prometheusRule": {"apiMinRequests": -1}}}, "apiMinRequests"),
    ],
)
def test_the_schema_types_the_new_values(values: dict[str, Any], field: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError, match=field):
        chart.validate_schema(chart.merge_values(values))


def test_the_failure_limit_and_trusted_proxies_reach_the_api() -> None:
    """The per-address failed-authentication limit counts the real client only when the API
    trusts the ingress's X-Forwarded-For: both are chart values."""
    default = {e["name"]: e.get("value") for e in _container(render_values({}), "api")[1]["env"]}
    assert default["CONVEYOR_AUTH_FAILURE_LIMIT"] == "20/minute"
    assert "FORWARDED_ALLOW_IPS" not in default  # uvicorn's own default: loopback only
    values = {"auth": {"failureLimit": "off", "trustedProxies": ["10.0.0.0/8", "192.168.1.7"]}}
    env = {e["name"]: e.get("value") for e in _container(render_values(values), "api")[1]["env"]}
    assert env["CONVEYOR_AUTH_FAILURE_LIMIT"] == "off"
    assert env["FORWARDED_ALLOW_IPS"] == "10.0.0.0/8,192.168.1.7"
