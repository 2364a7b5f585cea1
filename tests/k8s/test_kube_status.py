"""conveyor/kube.py, the API's TaskSchedule status sink, against kmock over HTTP: one merge
patch of the status subresource, with the pod's (rotating) token, never raising."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor.kube import KubeStatusWriter
from tests.k8s.conftest import NAMESPACE, SCHEDULES_BASE, Cluster

FIELDS = {
    "lastScheduleTime": "2026-12-03T09:00:00Z",
    "nextScheduleTime": "2026-12-03T09:01:00Z",
    "lastTaskId": "01JF0000000000000000000000",
    "lastTaskStatus": "queued",
}


@dataclass(frozen=True)
class Spec:
    name: str
    namespace: str = NAMESPACE


def _writer(cluster: Cluster, tmp_path: Path, timeout: float = 3.0) -> KubeStatusWriter:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    return KubeStatusWriter(str(cluster.emulator.url), token, timeout=timeout)


def _status_requests(cluster: Cluster) -> list[Any]:
    return [
        r
        for r in list(cluster.emulator)
        if r.resource is not None
        and r.resource.plural == "taskschedules"
        and r.subresource == "status"
        and not r.headers.get("User-Agent", "").startswith("kmock/")  # the test's own
    ]


async def test_a_status_write_is_one_merge_patch_of_the_status_subresource(cluster: Cluster, tmp_path: Path):
    await cluster.apply_schedule("nightly", {"taskType": "echo", "schedule": "@daily"})
    conditions = [{"type": "Ready", "status": "True", "reason": "Ready", "message": "valid"}]
    resp = await cluster.emulator.patch(
        f"{SCHEDULES_BASE}/nightly/status", json={"status": {"conditions": conditions}}
    )
    assert resp.status < 300
    writer = _writer(cluster, tmp_path)

    await asyncio.to_thread(writer.patch_schedule_status, Spec("nightly"), FIELDS)

    [request] = _status_requests(cluster)
    assert request.method == "PATCH" and request.name == "nightly" and request.namespace == NAMESPACE
    assert request.headers["Content-Type"] == "application/merge-patch+json"
    assert request.headers["Authorization"] == "Bearer first-token"
    assert request.data == {"status": FIELDS}
    stored = cluster.schedule("nightly")
    assert {k: stored["status"][k] for k in FIELDS} == FIELDS
    # The operator's condition and the spec are untouched.
    assert stored["status"]["conditions"] == conditions
    assert stored["spec"] == {"taskType": "echo", "schedule": "@daily"}
    assert writer.patched == 1 and writer.failed == 0


async def test_the_token_is_re_read_and_fields_it_does_not_own_are_never_sent(
    cluster: Cluster, tmp_path: Path
):
    await cluster.apply_schedule("s", {"taskType": "echo", "schedule": "@daily"})
    writer = _writer(cluster, tmp_path)
    await asyncio.to_thread(writer.patch_schedule_status, Spec("s"), {"lastTaskStatus": "running"})
    (tmp_path / "token").write_text("rotated-token")  # kubelet rewrote the projected token
    hostile = {"lastTaskStatus": "succeeded", "conditions": [], "observedGeneration": 99}
    await asyncio.to_thread(writer.patch_schedule_status, Spec("s"), hostile)
    await asyncio.to_thread(writer.patch_schedule_status, Spec("s"), {"conditions": []})  # nothing to send

    first, second = _status_requests(cluster)
    assert first.headers["Authorization"] == "Bearer first-token"
    assert second.headers["Authorization"] == "Bearer rotated-token"
    assert second.data == {"status": {"lastTaskStatus": "succeeded"}}


async def test_failures_are_logged_never_raised(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    writer = _writer(cluster, tmp_path)
    with caplog.at_level(logging.WARNING, logger="conveyor.kube"):
        # No such schedule (deleted since the loop read it): the API server's 404.
        await asyncio.to_thread(writer.patch_schedule_status, Spec("gone"), FIELDS)
        # The same failure again within a minute: not logged again at WARNING.
        await asyncio.to_thread(writer.patch_schedule_status, Spec("gone"), FIELDS)
        # The token unreadable.
        (tmp_path / "token").unlink()
        await asyncio.to_thread(writer.patch_schedule_status, Spec("gone"), FIELDS)
    assert writer.failed == 3 and writer.patched == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "gone" in warnings[0] and "404" in warnings[0]
    assert "FileNotFoundError" in warnings[1]


def test_an_unreachable_or_silent_api_server_costs_at_most_the_timeout(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("t")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    refused = KubeStatusWriter(f"http://127.0.0.1:{port}", token)
    refused.patch_schedule_status(Spec("s"), FIELDS)
    assert refused.failed == 1

    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        writer = KubeStatusWriter(f"http://127.0.0.1:{silent.getsockname()[1]}", token, timeout=0.3)
        started = time.monotonic()
        writer.patch_schedule_status(Spec("s"), FIELDS)
        assert time.monotonic() - started < 2 and writer.failed == 1


def test_from_environment_is_none_outside_a_cluster_or_without_a_token(tmp_path: Path):
    assert KubeStatusWriter.from_environment({}, tmp_path) is None
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert KubeStatusWriter.from_environment(env, tmp_path) is None  # automount off
    (tmp_path / "token").write_text("t")
    writer = KubeStatusWriter.from_environment(env, tmp_path)
    assert writer is not None and writer.server == "https://10.96.0.1:443" and writer.ca_file is None
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    v6 = KubeStatusWriter.from_environment({"KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path)
    assert v6 is not None and v6.server == "https://[fd00::1]:443" and v6.ca_file == tmp_path / "ca.crt"


async def test_a_null_field_clears_it(cluster: Cluster, tmp_path: Path):
    """A suspended schedule has no next slot: None removes the field (JSON merge patch),
    so NEXT shows empty rather than a stale time."""
    await cluster.apply_schedule("s", {"taskType": "echo", "schedule": "@daily", "suspend": True})
    writer = _writer(cluster, tmp_path)
    await asyncio.to_thread(writer.patch_schedule_status, Spec("s"), FIELDS)
    cleared = {**FIELDS, "nextScheduleTime": None}
    await asyncio.to_thread(writer.patch_schedule_status, Spec("s"), cleared)
    assert _status_requests(cluster)[-1].data == {"status": cleared}
    status = cluster.schedule("s")["status"]
    assert "nextScheduleTime" not in status and status["lastScheduleTime"] == FIELDS["lastScheduleTime"]
