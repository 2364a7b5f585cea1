"""Every request the operator makes is allowed by k8s/controller/rbac.yaml, and no more
than namespaced access is asked for."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT
from tests.k8s.conftest import NAMESPACE, Cluster, eventually

RBAC = list(yaml.safe_load_all((ROOT / "k8s" / "controller" / "rbac.yaml").read_text()))


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


def test_the_manifests_are_valid_and_namespaced():
    kinds = [doc["kind"] for doc in RBAC]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding"]  # no ClusterRole
    for doc in RBAC:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


async def test_every_operator_request_is_allowed_by_the_role(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CONVEYOR_CONFIGMAP", "conveyor-tasktypes")  # the name the Role allows
    async with cluster.operator():
        await cluster.apply("a", {"handler": "echo"})
        await cluster.apply("b", {"handler": "missing"})
        await eventually(lambda: len(cluster.registry() or {}) == 2)
        await cluster.apply("a", {"handler": "echo", "paused": True})
        await cluster.delete("b")
        await eventually(lambda: set(cluster.registry()) == {"a"})
        await eventually(lambda: cluster.events("b"))

    rules = next(doc for doc in RBAC if doc["kind"] == "Role")["rules"]
    seen, denied = set(), []
    for r in list(cluster.emulator):
        if r.headers.get("User-Agent", "").startswith("kmock/") or r.resource is None:
            continue  # the test's own requests; discovery is open to every account
        if r.resource.plural is None:
            continue  # /api/v1, /apis/<group>/<version>: discovery too
        resource = r.resource.plural + (f"/{r.subresource}" if r.subresource else "")
        verb = _verb(getattr(r.method, "value", str(r.method)), r.name, r.params)
        key = (r.resource.group, resource, verb, r.namespace)
        seen.add(key)
        if r.namespace != NAMESPACE or not _allowed(rules, r.resource.group, resource, verb, r.name):
            denied.append(key)
    assert not denied, denied
    # The scenario exercised every kind of access the operator needs.
    assert {(g, res, v) for g, res, v, _ in seen} >= {
        ("conveyor.dev", "tasktypes", "list"),
        ("conveyor.dev", "tasktypes", "watch"),
        ("conveyor.dev", "tasktypes", "patch"),
        ("conveyor.dev", "tasktypes/status", "patch"),
        ("", "configmaps", "get"),
        ("", "configmaps", "create"),
        ("", "configmaps", "patch"),
        ("", "events", "create"),
    }
