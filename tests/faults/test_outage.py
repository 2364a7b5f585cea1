"""AWS unreachable for a while: the API reports unready and answers 503 + Retry-After,
workers back off, and everything resumes without a restart when AWS returns."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from conveyor.model import Status
from tests.conftest import AUTH_HEADERS, wait_for
from tests.faults.handlers import side_effects
from tests.faults.harness import (
    CHAOS,
    Api,
    all_tasks,
    processes,
    record,
    spawn_worker,
    submit_many,
    wait_terminal,
)


@pytest.mark.parametrize(
    "outage", [pytest.param(4.0, id="fast-4s"), pytest.param(10.0, id="chaos-10s", marks=CHAOS)]
)
def test_aws_outage_unready_then_ready_and_workers_resume(
    settings, runtime, proxy, tmp_path, request, outage
):
    effects = tmp_path / "effects"
    logs = tmp_path / "worker.log"
    aws = {"AWS_ENDPOINT_URL": proxy.url}
    with processes() as procs:
        api = Api(settings, log=tmp_path / "api.log", **aws)
        procs.append(api.proc)
        worker = spawn_worker(settings, log=logs, CONVEYOR_WORKER_CONCURRENCY="4", **aws)
        procs.append(worker)
        http = httpx.Client(base_url=api.url, headers=AUTH_HEADERS, timeout=30)
        wait_for(lambda: http.get("/readyz").status_code == 200, timeout=20)
        # Two tasks that are still running when AWS goes away, and finish during the outage.
        long = submit_many(api.url, [{"log": str(effects), "seconds": outage / 2 + 1}] * 2, AUTH_HEADERS)
        running = lambda: all(runtime.engine.get(i).status is Status.RUNNING for i in long.accepted)  # noqa: E731
        wait_for(running, timeout=20)

        proxy.down()
        down_at = time.monotonic()
        wait_for(lambda: http.get("/readyz").status_code == 503, timeout=10)
        unready_after = time.monotonic() - down_at
        r = http.get("/readyz")
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["retry-after"].isdigit()
        refused = http.post("/v1/tasks", json={"type": "fault-count", "payload": {"log": str(effects)}})
        assert refused.status_code == 503 and refused.headers["retry-after"].isdigit(), refused.text
        assert http.get(f"/v1/tasks/{long.accepted[0]}").status_code == 503
        assert http.get("/healthz").status_code == 200  # alive, only unready: no restart
        time.sleep(max(0.0, outage - (time.monotonic() - down_at)))

        proxy.up()
        up_at = time.monotonic()
        wait_for(lambda: http.get("/readyz").status_code == 200, timeout=20)
        ready_after = time.monotonic() - up_at
        later = submit_many(api.url, [{"log": str(effects), "seconds": 0}] * 3, AUTH_HEADERS)
        wait_for(
            lambda: any(runtime.engine.get(i).status is Status.SUCCEEDED for i in later.accepted), timeout=40
        )
        resumed_after = time.monotonic() - up_at
        wait_terminal(runtime, 40)
        assert worker.poll() is None and api.proc.poll() is None  # never restarted
        http.close()

    found = all_tasks(runtime)
    assert {t.id for t in found} == set(long.accepted + later.accepted)
    assert all(t.status is Status.SUCCEEDED for t in found), [(t.id, t.status, t.error) for t in found]
    runs = side_effects(str(effects))
    assert all(len(runs[t.id]["done"]) == 1 for t in found)  # the long ones were not run again
    # The worker backed off (growing pauses), it did not spin or give up.
    pauses = [float(x) for x in re.findall(r"receive failed .*retrying in ([\d.]+)s", logs.read_text())]
    assert pauses and pauses == sorted(pauses) and max(pauses) > pauses[0], pauses
    assert unready_after < 8
    record(
        request.node.name,
        {
            "outage_seconds": outage,
            "api_unready_after_seconds": round(unready_after, 1),
            "api_ready_again_after_seconds": round(ready_after, 1),
            "worker_ran_a_new_task_after_seconds": round(resumed_after, 1),
            "worker_receive_backoffs_seconds": pauses,
            "tasks": len(found),
            "lost": 0,
        },
    )
