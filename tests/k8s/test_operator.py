"""The operator end to end: kopf's CLI running k8s/controller/tasktypes.py against kmock."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from conveyor.registry import Registry, TaskType
from tests.k8s.conftest import CONFIGMAP, NAMESPACE, Cluster, eventually


def _enabled(cluster: Cluster) -> list[str]:
    """What the API would accept, read back through conveyor.registry like the pods do."""
    entries = cluster.registry() or {}
    return Registry({n: TaskType.from_json(t) for n, t in entries.items()}).enabled()


async def test_create_writes_the_configmap_sets_ready_and_serves_liveness(cluster: Cluster):
    async with cluster.operator() as op:
        await cluster.apply(
            "resize",
            {
                "handler": "echo",
                "maxAttempts": 5,
                "backoff": {"initialSeconds": 2, "maxSeconds": 20},
                "timeoutSeconds": 90,
                "concurrency": {"perWorker": 2},
                "paused": True,
                "payloadSchema": {"type": "object", "required": ["src"]},
                "options": {"allowPrivateNetworks": True},
            },
        )
        entry = await eventually(lambda: (cluster.registry() or {}).get("resize"))
        assert entry["handler"] == "echo" and entry["ready"] is True
        assert (
            entry["maxAttempts"] == 5
            and entry["timeoutSeconds"] == 90
            and entry["concurrency"]["perWorker"] == 2
        )
        assert entry["backoff"] == {"initialSeconds": 2.0, "maxSeconds": 20.0}
        assert entry["paused"] is True and entry["options"] == {"allowPrivateNetworks": True}
        assert entry["payloadSchema"] == {"type": "object", "required": ["src"]}

        condition = await eventually(lambda: cluster.ready("resize"))
        assert condition["status"] == "True" and condition["observedGeneration"] == 1
        assert cluster.get("resize")["status"]["observedGeneration"] == 1
        events = await eventually(lambda: cluster.events("resize"))
        assert events[0]["type"] == "Normal" and events[0]["reason"] == "Ready"

        async with httpx.AsyncClient() as client:
            health = await client.get(f"http://127.0.0.1:{op.port}/healthz")
        assert health.status_code == 200
        probe = health.json()["registry"]
        assert probe["taskTypes"] == 1 and probe["writes"] >= 1 and probe["error"] == ""


async def test_bad_handler_or_schema_is_not_ready_with_an_event_and_not_enabled(cluster: Cluster):
    async with cluster.operator():
        await cluster.apply("good", {"handler": "echo"})
        await cluster.apply("ghost", {"handler": "no-such-handler"})
        await cluster.apply("badschema", {"handler": "echo", "payloadSchema": {"type": "nonsense"}})
        registry = await eventually(lambda: len(cluster.registry() or {}) == 3 and cluster.registry())

        ghost = await eventually(lambda: cluster.ready("ghost"))
        assert ghost["status"] == "False" and ghost["reason"] == "HandlerNotFound"
        assert "no-such-handler" in ghost["message"] and "echo" in ghost["message"]  # names what exists
        warning = await eventually(lambda: cluster.events("ghost"))
        assert warning[0]["type"] == "Warning" and warning[0]["reason"] == "HandlerNotFound"

        bad = await eventually(lambda: cluster.ready("badschema"))
        assert bad["status"] == "False" and bad["reason"] == "InvalidSchema"
        assert "payloadSchema" in bad["message"]

        # Every TaskType is in the ConfigMap with its readiness; only the good one is enabled.
        assert registry["ghost"]["ready"] is False and registry["ghost"]["reason"] == "HandlerNotFound"
        assert registry["badschema"]["reason"] == "InvalidSchema"
        assert _enabled(cluster) == ["good"]


async def test_update_is_followed_and_delete_removes_the_type(cluster: Cluster):
    async with cluster.operator():
        await cluster.apply("job", {"handler": "no-such-handler", "maxAttempts": 2})
        await eventually(lambda: (cluster.ready("job") or {}).get("status") == "False")
        assert _enabled(cluster) == []

        # Fix the handler and tune it: status, condition and ConfigMap follow.
        await cluster.apply("job", {"handler": "echo", "maxAttempts": 7, "enabled": True, "paused": True})
        entry = await eventually(
            lambda: (e := (cluster.registry() or {}).get("job")) and e["maxAttempts"] == 7 and e
        )
        assert entry["ready"] is True and entry["paused"] is True
        condition = await eventually(lambda: (c := cluster.ready("job")) and c["status"] == "True" and c)
        assert condition["observedGeneration"] == 2
        assert _enabled(cluster) == ["job"]

        await cluster.apply("job", {"handler": "echo", "maxAttempts": 7, "enabled": False})
        await eventually(lambda: cluster.registry()["job"]["enabled"] is False)
        assert _enabled(cluster) == []

        await cluster.delete("job")
        await eventually(lambda: cluster.registry() == {})


async def test_restart_resyncs_everything_changed_while_down(cluster: Cluster):
    async with cluster.operator():
        await cluster.apply("keep", {"handler": "echo", "maxAttempts": 1})
        await cluster.apply("drop", {"handler": "echo"})
        await eventually(lambda: set(cluster.registry() or {}) == {"keep", "drop"})
    # Operator down: these changes are not seen until it restarts.
    await cluster.delete("drop")
    await cluster.apply("keep", {"handler": "echo", "maxAttempts": 4})
    await cluster.apply("new", {"handler": "echo"})
    await asyncio.sleep(0.3)
    assert set(cluster.registry()) == {"keep", "drop"}

    async with cluster.operator():
        await eventually(lambda: set(cluster.registry()) == {"keep", "new"})
        assert cluster.registry()["keep"]["maxAttempts"] == 4
        await eventually(lambda: (cluster.ready("new") or {}).get("status") == "True")

    # Even with nothing left to watch, a restart clears the registry.
    await cluster.delete("keep")
    await cluster.delete("new")
    async with cluster.operator():
        await eventually(lambda: cluster.registry() == {})


async def test_unchanged_registry_is_not_rewritten(cluster: Cluster):
    async with cluster.operator():
        await cluster.apply("a", {"handler": "echo"})
        await eventually(lambda: "a" in (cluster.registry() or {}))
        await eventually(lambda: cluster.ready("a"))
        await asyncio.sleep(0.8)  # status patches and their watch events come and go
        writes, reads = cluster.configmap_requests("POST", "PATCH"), cluster.configmap_requests("GET")
        # A change outside the spec's registry fields (a label) triggers a pass, not a write.
        resp = await cluster.emulator.patch(
            "/apis/conveyor.dev/v1alpha1/namespaces/conveyor/tasktypes/a",
            json={"metadata": {"labels": {"team": "x"}}},
        )
        assert resp.status == 200
        await eventually(lambda: cluster.configmap_requests("GET") > reads)  # the writer looked
        await asyncio.sleep(0.3)
        assert cluster.configmap_requests("POST", "PATCH") == writes == 1


async def test_invalid_schema_names_every_problem_and_every_remote_ref(cluster: Cluster):
    schema = {
        "type": "nonsense",
        "properties": {"a": {"minLength": -1}, "$ref": {"type": "string"}},  # a property named $ref
        "items": {"$ref": "https://schemas.example.com/item.json"},
        "allOf": [{"$ref": "#/$defs/local"}, {"$dynamicRef": "file:///etc/passwd"}],
        "enum": [{"$ref": "http://data.example.com/"}],  # data, not a reference
        "$defs": {"local": {"type": "object"}},
    }
    async with cluster.operator():
        await cluster.apply("bad", {"handler": "echo", "payloadSchema": schema})
        condition = await eventually(lambda: cluster.ready("bad"))
    assert condition["status"] == "False" and condition["reason"] == "InvalidSchema"
    message = condition["message"]
    assert "(at /type)" in message and "(at /properties/a/minLength)" in message
    assert "'https://schemas.example.com/item.json' is not local" in message and "(at /items/$ref)" in message
    assert "'file:///etc/passwd' is not local" in message
    assert "#/$defs/local" not in message and "data.example.com" not in message
    assert "/properties/$ref" not in message


async def test_a_remote_ref_alone_makes_the_type_not_ready(cluster: Cluster):
    async with cluster.operator():
        await cluster.apply(
            "remote", {"handler": "echo", "payloadSchema": {"$ref": "http://169.254.169.254/"}}
        )
        entry = await eventually(lambda: (cluster.registry() or {}).get("remote"))
    assert entry["ready"] is False and entry["reason"] == "InvalidSchema"
    assert "http://169.254.169.254/" in entry["message"]
    assert _enabled(cluster) == []


async def test_a_deleted_or_edited_configmap_is_restored_within_seconds(cluster: Cluster):
    path = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{CONFIGMAP}"
    async with cluster.operator():
        await cluster.apply("a", {"handler": "echo"})
        await eventually(lambda: "a" in (cluster.registry() or {}))

        resp = await cluster.emulator.delete(path)
        assert resp.status < 300
        assert cluster.registry() is None
        started = time.monotonic()
        await eventually(lambda: "a" in (cluster.registry() or {}), timeout=5)
        restored_after = time.monotonic() - started

        edited = json.dumps({"apiVersion": "conveyor.dev/v1alpha1", "taskTypes": []})
        resp = await cluster.emulator.patch(path, json={"data": {"tasktypes.json": edited}})
        assert resp.status < 300 and cluster.registry() == {}
        await eventually(lambda: "a" in (cluster.registry() or {}), timeout=5)
    assert restored_after < 3


async def test_an_unchanged_configmap_is_only_read_back(cluster: Cluster):
    async with cluster.operator():
        await cluster.apply("a", {"handler": "echo"})
        await eventually(lambda: "a" in (cluster.registry() or {}))
        await asyncio.sleep(0.5)
        before = len(list(cluster.emulator))
        await asyncio.sleep(1.6)  # about three checks at 0.5 s
        idle = [
            (str(getattr(r.method, "value", r.method)), r.resource.plural if r.resource else None, r.name)
            for r in list(cluster.emulator)[before:]
            if not r.headers.get("User-Agent", "").startswith("kmock/")
        ]
    # Idle, the operator's only requests are the read-backs: one GET of the ConfigMap by name
    # per check, no list of TaskTypes or TaskSchedules, no write.
    assert idle and set(idle) == {("GET", "configmaps", CONFIGMAP)}, idle
    assert 2 <= len(idle) <= 4, idle


async def test_a_handler_from_handler_modules_is_ready(cluster: Cluster, custom_handler_modules: None):
    """CONVEYOR_HANDLER_MODULES (the chart's handlers.modules) is what the operator checks
    handlers against: a custom handler is Ready, not HandlerNotFound."""
    async with cluster.operator():
        await cluster.apply("custom", {"handler": "custom-thing"})
        condition = await eventually(lambda: cluster.ready("custom"))
    assert condition["status"] == "True", condition


async def test_the_read_back_keeps_one_client_until_the_credentials_change(cluster: Cluster):
    """The check every few seconds reuses its connection (no new TLS handshake per check);
    credentials read again (a rotated token) make a new client and close the old one."""
    import kopf

    from tests.k8s.test_schedule_crd import load_operator

    operator = load_operator()
    server = str(cluster.emulator.url).rstrip("/")
    writer = operator.Writer(
        namespace=NAMESPACE,
        configmap=CONFIGMAP,
        connection=kopf.ConnectionInfo(server=server, token="a"),
        expected={},
    )
    assert await operator.drifted(writer)  # no ConfigMap yet
    first = writer.checker
    assert await operator.drifted(writer)
    assert writer.checker is first and not first.is_closed
    writer.connection = kopf.ConnectionInfo(server=server, token="b")
    assert await operator.drifted(writer)
    assert writer.checker is not first and first.is_closed
    assert writer.checker.headers["Authorization"] == "Bearer b"
    await operator._close_checker(writer)
    assert writer.checker is None
    assert cluster.configmap_requests("GET") == 3
