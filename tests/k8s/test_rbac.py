"""The operator's RBAC is the Role the chart renders, and it grants exactly what the operator
uses: a recorded operator run makes every request it allows, and no request it denies."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
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


# -- the API's Role: TaskSchedule status, nothing else ---------------------------------------


def _api(values: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any]]:
    rendered = render_values(values, name=RELEASE, namespace=NAMESPACE)
    named = [o for o in rendered.objects if o["metadata"]["name"] == f"{RELEASE}-api"]
    role = next((o for o in named if o["kind"] == "Role"), None)
    binding = next((o for o in named if o["kind"] == "RoleBinding"), None)
    pod = rendered.one("Deployment", f"{RELEASE}-api")["spec"]["template"]["spec"]
    return role, binding, pod


def test_the_api_may_only_patch_taskschedule_status_and_only_its_pod_mounts_a_token():
    role, binding, pod = _api({})
    assert role is not None and binding is not None
    for doc in (role, binding):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        assert doc["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["conveyor.dev"], "resources": ["taskschedules/status"], "verbs": ["patch"]}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    assert pod["automountServiceAccountToken"] is True
    # The account is shared with the workers and the init Job: it mounts no token itself,
    # and no pod but the API's (and the operator's) asks for one.
    rendered = render_values({}, name=RELEASE, namespace=NAMESPACE)
    account = rendered.one("ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    for workload in rendered.objects:
        template = ((workload.get("spec") or {}).get("template") or {}).get("spec")
        if template and template.get("serviceAccountName") == pod["serviceAccountName"]:
            mounts = template.get("automountServiceAccountToken")
            assert mounts is (workload["metadata"]["name"] == f"{RELEASE}-api"), workload["metadata"]["name"]


def test_without_status_updates_the_api_has_no_role_and_no_token():
    role, binding, pod = _api({"schedules": {"statusUpdates": False}})
    assert role is None and binding is None
    assert pod["automountServiceAccountToken"] is False


async def test_the_api_role_grants_exactly_what_the_status_writer_uses(cluster: Cluster, tmp_path: Path):
    from conveyor.kube import KubeStatusWriter

    await cluster.apply_schedule("s", {"taskType": "echo", "schedule": "@daily"})
    token = tmp_path / "token"
    token.write_text("t")
    writer = KubeStatusWriter(str(cluster.emulator.url), token)

    class Spec:
        name, namespace = "s", NAMESPACE

    await asyncio.to_thread(writer.patch_schedule_status, Spec(), {"lastTaskStatus": "queued"})
    assert writer.patched == 1
    role, _, _ = _api({})
    assert role is not None
    used = set()
    for r in list(cluster.emulator):
        if r.headers.get("User-Agent", "").startswith("kmock/") or r.resource is None:
            continue
        resource = r.resource.plural + (f"/{r.subresource}" if r.subresource else "")
        verb = _verb(getattr(r.method, "value", str(r.method)), r.name, r.params)
        assert r.namespace == NAMESPACE and _allowed(
            role["rules"], r.resource.group or "", resource, verb, r.name
        )
        used.add((r.resource.group or "", resource, verb, None))
    assert _granted(role["rules"]) == used
