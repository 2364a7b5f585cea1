"""The real operator (``kopf run``, in a thread) against kmock's Kubernetes emulator over HTTP.

kmock serves on the test's event loop, so tests are async and wait with ``asyncio.sleep``;
the operator runs on its own loop in KopfRunner's thread. The TaskType resource is declared
in the emulator from the CRD file itself, so discovery matches what the cluster serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import yaml
from kopf.testing import KopfRunner

from tests.conftest import ROOT
from tests.support.servers import free_port

CRD = ROOT / "charts" / "conveyor" / "crds" / "tasktypes.conveyor.dev.yaml"
SCHEDULE_CRD = ROOT / "charts" / "conveyor" / "crds" / "taskschedules.conveyor.dev.yaml"
OPERATOR = ROOT / "k8s" / "controller" / "tasktypes.py"
NAMESPACE = "conveyor"
CONFIGMAP = "test-tasktypes"
TASKTYPES = "conveyor.dev/v1alpha1/tasktypes"
TASKSCHEDULES = "conveyor.dev/v1alpha1/taskschedules"
BASE = f"/apis/conveyor.dev/v1alpha1/namespaces/{NAMESPACE}/tasktypes"
SCHEDULES_BASE = f"/apis/conveyor.dev/v1alpha1/namespaces/{NAMESPACE}/taskschedules"


def _declare(emulator: kmock.KubernetesEmulator, schedules: bool = True) -> None:
    for path in (CRD, SCHEDULE_CRD) if schedules else (CRD,):
        crd = yaml.safe_load(path.read_text())
        names = crd["spec"]["names"]
        version = next(v for v in crd["spec"]["versions"] if v["served"])
        emulator.resources[f"{crd['spec']['group']}/{version['name']}/{names['plural']}"] = (
            kmock.ResourceInfo(
                kind=names["kind"],
                singular=names["singular"],
                shortnames=set(names["shortNames"]),
                namespaced=crd["spec"]["scope"] == "Namespaced",
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
                subresources=set(version.get("subresources", {})),
            )
        )
    # kopf lists namespaces at startup; without this resource it waits silently forever.
    emulator.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"get", "list", "watch"}
    )
    emulator.resources["v1/configmaps"] = kmock.ResourceInfo(
        kind="ConfigMap", namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"}
    )
    emulator.resources["v1/events"] = kmock.ResourceInfo(
        kind="Event", namespaced=True, verbs={"create", "list"}
    )
    emulator.objects["v1/namespaces", None, NAMESPACE] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE},
    }


def _ready_condition(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), None)


class Cluster:
    """What a test does to the emulated cluster, through the HTTP API like kubectl would."""

    def __init__(self, emulator: kmock.KubernetesEmulator) -> None:
        self.emulator = emulator
        self.generations: dict[str, int] = {}

    async def apply(self, name: str, spec: dict[str, Any]) -> None:
        """Create or replace a TaskType's spec; bumps metadata.generation like the API server."""
        await self._apply(TASKTYPES, BASE, "TaskType", name, spec)

    async def apply_schedule(self, name: str, spec: dict[str, Any]) -> None:
        """Create or replace a TaskSchedule's spec (as the API server stores it: defaulted
        by the caller, since the emulator applies no schema)."""
        await self._apply(TASKSCHEDULES, SCHEDULES_BASE, "TaskSchedule", name, spec)

    async def _apply(self, resource: str, base: str, kind: str, name: str, spec: dict[str, Any]) -> None:
        key = f"{kind}/{name}"
        gen = self.generations.get(key, 0) + 1
        self.generations[key] = gen
        if gen == 1 or self._object(resource, name) is None:
            body = {
                "apiVersion": "conveyor.dev/v1alpha1",
                "kind": kind,
                "metadata": {"name": name, "namespace": NAMESPACE, "generation": gen, "uid": f"uid-{name}"},
                "spec": spec,
            }
            resp = await self.emulator.post(base, json=body)
        else:
            # The emulator merges patches key by key; send the full spec, nulling removed keys.
            old = (self._object(resource, name) or {})["spec"]
            patch = {"metadata": {"generation": gen}, "spec": {k: None for k in old if k not in spec} | spec}
            resp = await self.emulator.patch(f"{base}/{name}", json=patch)
        assert resp.status < 300, await resp.text()

    async def delete(self, name: str) -> None:
        resp = await self.emulator.delete(f"{BASE}/{name}")
        assert resp.status < 300, await resp.text()
        self.generations.pop(f"TaskType/{name}", None)

    async def delete_schedule(self, name: str) -> None:
        resp = await self.emulator.delete(f"{SCHEDULES_BASE}/{name}")
        assert resp.status < 300, await resp.text()
        self.generations.pop(f"TaskSchedule/{name}", None)

    def _object(self, resource: str, name: str) -> dict[str, Any] | None:
        # ObjectsArray's `in` does not parse resource strings: use a parsed key.
        key = (kmock.resource(resource), NAMESPACE, name)
        if key not in self.emulator.objects or self.emulator.objects[key].deleted:
            return None
        return dict(self.emulator.objects[key].raw)

    def get(self, name: str) -> dict[str, Any] | None:
        return self._object(TASKTYPES, name)

    def ready(self, name: str) -> dict[str, Any] | None:
        return _ready_condition(self.get(name))

    def schedule(self, name: str) -> dict[str, Any] | None:
        return self._object(TASKSCHEDULES, name)

    def schedule_ready(self, name: str) -> dict[str, Any] | None:
        return _ready_condition(self.schedule(name))

    def schedules(self) -> dict[str, dict[str, Any]] | None:
        """The ConfigMap's schedules.json, by schedule name (None: no ConfigMap or no key)."""
        configmap = self._object("v1/configmaps", os.environ["CONVEYOR_CONFIGMAP"])
        if configmap is None or "schedules.json" not in (configmap.get("data") or {}):
            return None
        doc = json.loads(configmap["data"]["schedules.json"])
        assert doc["apiVersion"] == "conveyor.dev/v1alpha1"
        return {s["name"]: s for s in doc["schedules"]}

    def registry(self) -> dict[str, dict[str, Any]] | None:
        """The ConfigMap's registry, by task type name (None: no ConfigMap yet)."""
        configmap = self._object("v1/configmaps", os.environ["CONVEYOR_CONFIGMAP"])
        if configmap is None:
            return None
        doc = json.loads(configmap["data"]["tasktypes.json"])
        return {t["name"]: t for t in doc["taskTypes"]}

    def configmap_requests(self, *methods: str) -> int:
        return sum(
            1
            for r in list(self.emulator)
            if r.resource is not None and r.resource.plural == "configmaps" and r.method in methods
        )

    def events(self, name: str, kind: str = "TaskType") -> list[dict[str, Any]]:
        """Events posted about an object, read from the requests: the emulator stores only the
        first ``generateName`` event (it keys objects by name) and answers 409 to the rest."""
        return [
            r.data
            for r in list(self.emulator)
            if r.resource is not None
            and r.resource.plural == "events"
            and r.method == "POST"
            and (r.data.get("involvedObject") or {}).get("name") == name
            and (r.data.get("involvedObject") or {}).get("kind") == kind
        ]

    @contextlib.asynccontextmanager
    async def operator(self) -> AsyncIterator[OperatorRun]:
        """Run the real operator file through kopf's CLI until the block exits."""
        port = free_port()
        args = [
            "run",
            "--standalone",
            "--namespace",
            NAMESPACE,
            f"--liveness=http://127.0.0.1:{port}/healthz",
            str(OPERATOR),
        ]
        # A fresh registry per run: kopf 1.45's runner registers into the process-wide default
        # one, so each re-import of the operator file would add another set of handlers.
        runner = KopfRunner(args, timeout=30, registry=kopf.OperatorRegistry())
        # __enter__ only starts a thread; __exit__ joins it, which must not block kmock's loop.
        runner.__enter__()
        try:
            yield OperatorRun(runner, port)
        finally:
            await asyncio.to_thread(runner.__exit__, None, None, None)
        assert runner.exit_code == 0, runner.output


class OperatorRun:
    def __init__(self, runner: KopfRunner, port: int) -> None:
        self.runner = runner
        self.port = port


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` (letting kmock serve meanwhile) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


@pytest.fixture
def custom_handler_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONVEYOR_HANDLER_MODULES names tests/k8s/fixtures/custom_handlers.py (its handler:
    `custom-thing`), with worker.handlers reset to load it; undone after the test. Listed after
    `cluster`, which clears the variable."""
    from worker import handlers

    handlers.names()  # the built-ins loaded for good, so undoing the patches restores them
    monkeypatch.setattr(handlers, "_loaded", False)
    monkeypatch.setattr(handlers, "_HANDLERS", dict(handlers._HANDLERS))
    monkeypatch.delitem(sys.modules, "custom_handlers", raising=False)  # registers on import
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fixtures"))
    monkeypatch.setenv("CONVEYOR_HANDLER_MODULES", "custom_handlers")


@pytest.fixture
async def cluster(
    kmock: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Cluster:
    _declare(kmock)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kmock",
                "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                "users": [{"name": "kmock", "user": {"token": "test-token"}}],
                "contexts": [
                    {
                        "name": "kmock",
                        "context": {"cluster": "kmock", "user": "kmock", "namespace": NAMESPACE},
                    }
                ],
            }
        )
    )
    # KopfRunner re-imports the operator file, so its settings travel through the environment.
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("CONVEYOR_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("CONVEYOR_CONFIGMAP", CONFIGMAP)
    monkeypatch.delenv("CONVEYOR_HANDLER_MODULES", raising=False)
    monkeypatch.setenv("CONVEYOR_OPERATOR_CHECK_SECONDS", "0.5")
    return Cluster(kmock)
