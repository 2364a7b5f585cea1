"""Load: concurrent clients submitting through uvicorn (a real API process), two worker
processes running everything. No errors, every task completes once; submit latency
percentiles are recorded."""

from __future__ import annotations

import time

import pytest

from conveyor.bootstrap import build
from conveyor.model import Status
from tests.conftest import AUTH_HEADERS
from tests.faults.handlers import side_effects
from tests.faults.harness import (
    CHAOS,
    Api,
    Backlog,
    all_tasks,
    processes,
    record,
    spawn_worker,
    submit_many,
    wait_terminal,
)

BACKLOG = 100  # tasks submitted and not yet done, at most (see Backlog)


@pytest.mark.parametrize(
    ("clients", "tasks"),
    [
        pytest.param(10, 60, id="fast-10-clients-60-tasks"),
        pytest.param(50, 2000, id="chaos-50-clients-2000-tasks", marks=CHAOS),
    ],
)
def test_concurrent_clients_through_uvicorn(fault_settings, tmp_path, request, clients, tasks):
    # No sweeper churn under a deliberate backlog: this run is about throughput.
    settings = fault_settings(redispatch_after_seconds=300)
    runtime = build(settings)
    effects = tmp_path / "effects"
    with processes() as procs:
        api = Api(settings, log=tmp_path / "api.log")
        procs.append(api.proc)
        procs += [
            spawn_worker(settings, log=tmp_path / "workers.log", CONVEYOR_WORKER_CONCURRENCY="16")
            for _ in range(2)
        ]
        start = time.monotonic()
        with Backlog(effects, BACKLOG) as backlog:
            submitted = submit_many(
                # Plain submits: moto's TransactWriteItems (the Idempotency-Key path) deep-copies
                # every table, so its cost grows with the table; real DynamoDB's does not.
                api.url,
                [{"log": str(effects), "seconds": 0}] * tasks,
                AUTH_HEADERS,
                clients=clients,
                keyed=False,
                backlog=backlog,
            )
        submit_seconds = time.monotonic() - start
        drained = wait_terminal(runtime, 600, poll=2.0)
        total = time.monotonic() - start
    assert dict(submitted.codes) == {202: tasks}, submitted.codes  # no error, no retry
    found = all_tasks(runtime)
    assert len(found) == tasks and all(t.status is Status.SUCCEEDED for t in found)
    runs = side_effects(str(effects))
    assert all(len(runs[t.id]["done"]) == 1 for t in found)
    record(
        request.node.name,
        {
            "clients": clients,
            "tasks": tasks,
            "errors": 0,
            "submit_p50_ms": round(submitted.percentile(50) * 1000, 1),
            "submit_p99_ms": round(submitted.percentile(99) * 1000, 1),
            "submit_max_ms": round(max(submitted.latencies) * 1000, 1),
            "submits_per_second": round(tasks / submit_seconds, 1),
            "seconds_until_all_succeeded": round(total, 1),
            "seconds_draining_after_the_last_submit": round(drained, 1),
            "backlog_cap": BACKLOG,
        },
    )
