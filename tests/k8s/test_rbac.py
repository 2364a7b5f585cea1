"""The operator's RBAC is the Role the chart renders, and it grants exactly what the operator
uses: a recorded operator run makes every request it allows, and no request it denies."""

from __future__ import annotations

import functools
from typing import Any

import kubernetes_validate
import pytest

from tests.chart.render import render_values
from tests.k8s.conftest import NAMESPACE, Cluster, eventually

RELEASE = "conveyor"


@functools.cache
def _rendered() -> dict[str, dict[str, Any]]:
    rendered = render_values({}, name=RELEASE, namespace=NAMESPACE)
    kinds = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    return {
        f"{o['kind']}/{o['metadata']['name']}": o
        for o in rendered.objects
        if o["kind"] in kinds and o["metadata"]["name"] == f"{RELEASE}-operator"
    }


def _role() -> dict[str, Any]:
    return _rendered()[f"Role/{RELEASE}-operator"]


def _verb(method: str, name: str | None, params: dict[str, str]) -> str:
    if method == "GET":
        return "watch" if params.get("watch") == "true" else ("get" if name else "list")
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]


def _allowed(rules: list[dict], group: str, resource: str, verb: str, name: str | None) -> bool:
    return any(
        group in rule["apiGroups"]
        and resource in rule["resources"]
        and verb in rule["verbs"]
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
        for rule in rules
    )


def _granted(rules: list[dict]) -> set[tuple[str, str, str, str | None]]:
    return {
        (group, resource, verb, name)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in (rule.get("resourceNames") or [None])
    }


def test_the_chart_renders_a_namespaced_service_account_role_and_binding():
    rendered = _rendered()
    assert sorted(rendered) == [
        f"Role/{RELEASE}-operator",
        f"RoleBinding/{RELEASE}-operator",
        f"ServiceAccount/{RELEASE}-operator",
    ]  # no ClusterRole
    for doc in rendered.values():
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        assert doc["metadata"]["namespace"] == NAMESPACE
    binding = rendered[f"RoleBinding/{RELEASE}-operator"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": f"{RELEASE}-operator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-operator", "namespace": NAMESPACE}
    ]


async def test_the_role_grants_exactly_what_the_operator_uses(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
):
    configmap = f"{RELEASE}-tasktypes"  # the name the chart gives the operator and the Role
    monkeypatch.setenv("CONVEYOR_CONFIGMAP", configmap)
    async with cluster.operator():
        await cluster.apply("a", {"handler": "echo"})
        await cluster.apply("b", {"handler": "missing"})
        await eventually(lambda: len(cluster.registry() or {}) == 2)
        # A schedule: listed, watched, its status patched, an Event posted.
        await cluster.apply_schedule("s", {"taskType": "a", "schedule": "@hourly"})
        await eventually(lambda: cluster.schedule_ready("s") and "s" in (cluster.schedules() or {}))
        await cluster.apply("a", {"handler": "echo", "paused": True})
        await cluster.delete("b")
        await eventually(lambda: set(cluster.registry()) == {"a"})
        await eventually(lambda: cluster.events("b"))
        # Deleted by hand: the operator creates it again (the one use of `create`).
        resp = await cluster.emulator.delete(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{configmap}")
        assert resp.status < 300
        assert cluster.registry() is None
        await eventually(lambda: "a" in (cluster.registry() or {}))

    rules = _role()["rules"]
    used: set[tuple[str, str, str, str | None]] = set()
    denied = []
    for r in list(cluster.emulator):
        if r.headers.get("User-Agent", "").startswith("kmock/") or r.resource is None:
            continue  # the test's own requests; discovery is open to every account
        if r.resource.plural is None:
            continue  # /api/v1, /apis/<group>/<version>: discovery too
        resource = r.resource.plural + (f"/{r.subresource}" if r.subresource else "")
        verb = _verb(getattr(r.method, "value", str(r.method)), r.name, r.params)
        group = r.resource.group or ""
        if r.namespace != NAMESPACE or not _allowed(rules, group, resource, verb, r.name):
            denied.append((group, resource, verb, r.name, r.namespace))
        # RBAC checks resourceNames only for requests that name the object.
        named = any(g == group and res == resource and v == verb and n for g, res, v, n in _granted(rules))
        used.add((group, resource, verb, r.name if named else None))
    assert not denied, denied
    # Nothing granted goes unused.
    assert _granted(rules) == used
