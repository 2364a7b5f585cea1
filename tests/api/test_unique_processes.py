"""Two real API processes over the moto server, 20 concurrent submits with one unique key
per strategy: exactly one active task is left, and every caller gets the documented answer.
The lock is one DynamoDB item written in the task's transaction, so the two processes
(replicas) need nothing else to agree."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.aws import AwsBackend
from conveyor.local import free_port, stop_process, wait_http
from conveyor.model import Status
from tests.conftest import ROOT, TEST_TOKEN, service_env
from tests.support.unique import unique_types

SUBMITS = 20


@pytest.fixture
def two_apis(settings_factory, tmp_path: Path) -> Iterator[tuple[Any, list[str]]]:
    settings = settings_factory(tasktypes=str(unique_types(tmp_path)), rate_limit="off")
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for _ in range(2):
            port = free_port()
            env = service_env(settings, "", CONVEYOR_API_PORT=str(port), CONVEYOR_MAINTENANCE_ENABLED="false")
            procs.append(subprocess.Popen([sys.executable, "-m", "api.main"], env=env, cwd=ROOT))
            urls.append(f"http://127.0.0.1:{port}")
        for proc, url in zip(procs, urls, strict=True):
            wait_http(url + "/healthz", proc=proc)
        yield settings, urls
    finally:
        for proc in procs:
            stop_process(proc)


def burst(urls: list[str], task_type: str) -> list[httpx.Response]:
    """SUBMITS submits of ``task_type`` for one user, alternating between the processes,
    released together."""
    gate = threading.Barrier(SUBMITS)
    clients = [httpx.Client(base_url=u, headers={"Authorization": f"Bearer {TEST_TOKEN}"}) for u in urls]

    def one(n: int) -> httpx.Response:
        client = clients[n % len(clients)]
        body = {"type": task_type, "payload": {"user": "ada", "n": n}}
        gate.wait()
        return client.post("/v1/tasks", json=body, timeout=30)

    try:
        with ThreadPoolExecutor(SUBMITS) as pool:
            return list(pool.map(one, range(SUBMITS)))
    finally:
        for c in clients:
            c.close()


def test_twenty_concurrent_submits_through_two_processes_leave_one_active_task(two_apis):
    settings, urls = two_apis
    store = AwsBackend(settings).store()

    def tasks(task_type: str) -> list[Any]:
        return store.query(task_type=task_type, limit=100).items

    # return-existing: one 202, the rest 200 with that same task.
    answers = burst(urls, "latest")
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * (SUBMITS - 1) + [202], [r.text for r in answers if r.status_code >= 300]
    assert len({r.json()["id"] for r in answers}) == 1
    assert [t.status for t in tasks("latest")] == [Status.QUEUED]

    # reject: one 202, the rest 409 duplicate naming it.
    answers = burst(urls, "once")
    created = [r.json()["id"] for r in answers if r.status_code == 202]
    refused = [r.json() for r in answers if r.status_code == 409]
    assert len(created) == 1 and len(refused) == SUBMITS - 1, [r.text for r in answers]
    assert {p["type"] for p in refused} == {"/problems/duplicate"}
    assert {p["existing_task"] for p in refused} == set(created)
    assert [t.id for t in tasks("once")] == created

    # replace: every submit is accepted, each cancelling the one before it: one is left queued.
    answers = burst(urls, "debounce")
    assert [r.status_code for r in answers] == [202] * SUBMITS, [r.text for r in answers]
    statuses = sorted(t.status.value for t in tasks("debounce"))
    assert statuses == ["cancelled"] * (SUBMITS - 1) + ["queued"]
