"""Injected AWS failures (throttling, 5xx, dropped connections before and after the request
took effect): every accepted task ends, none runs to completion twice, the API answers
503 + Retry-After and never 500."""

from __future__ import annotations

import pytest

from conveyor.model import Status
from tests.conftest import AUTH_HEADERS
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


def tail(path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@pytest.mark.parametrize(
    ("tasks", "fault_rate", "timeout"),
    [
        pytest.param(40, 0.2, 90, id="fast-40-tasks-20pct"),
        pytest.param(500, 0.1, 420, id="chaos-500-tasks-10pct", marks=CHAOS),
    ],
)
def test_aws_failures_lose_nothing_and_run_nothing_twice(
    settings, runtime, proxy, tmp_path, request, tasks, fault_rate, timeout
):
    effects = tmp_path / "effects"
    logs = tmp_path / "services.log"
    # Half answered with an AWS error, half a dropped connection (before or after forwarding).
    proxy.set(error_rate=fault_rate / 2, drop_rate=fault_rate / 2)
    aws = {"AWS_ENDPOINT_URL": proxy.url, "CONVEYOR_WORKER_CONCURRENCY": "8"}
    with processes() as procs:
        api = Api(settings, log=tmp_path / "api.log", **aws)
        procs.append(api.proc)
        procs += [spawn_worker(settings, log=logs, **aws) for _ in range(2)]
        submitted = submit_many(api.url, [{"log": str(effects), "seconds": 0.05}] * tasks, AUTH_HEADERS)
        took = wait_terminal(runtime, timeout)
        faults = proxy.snapshot()
    diagnostics = f"\napi log:\n{tail(tmp_path / 'api.log')}\nworker logs:\n{tail(logs)}"

    # The API: only 200/202 and 503 (with Retry-After), never a 500.
    assert set(submitted.codes) <= {200, 202, 503}, (submitted.codes, submitted.bodies_5xx, diagnostics)
    assert submitted.retry_after_missing == 0
    # Every accepted task ended, and succeeded. A retry after a 503 can add a task only
    # without an Idempotency-Key (its first PutItem landed, its answer did not): that one
    # must end too.
    found = {t.id: t for t in all_tasks(runtime)}
    assert len(submitted.accepted) == tasks
    assert set(submitted.accepted) <= set(found), diagnostics
    extra = len(found) - tasks
    assert extra <= submitted.codes[503]
    lost = [i for i, t in found.items() if t.status is not Status.SUCCEEDED]
    assert lost == [], [(i, found[i].status, found[i].error) for i in lost]
    # The handler's side effect happened exactly once per task.
    done = {task_id: len(e["done"]) for task_id, e in side_effects(str(effects)).items()}
    twice = {i: n for i, n in done.items() if n != 1}
    assert twice == {} and set(done) == set(found), diagnostics
    injected = sum(n for k, n in faults.items() if k.startswith(("error:", "drop:")))
    assert injected > tasks * fault_rate  # the faults really happened
    record(
        request.node.name,
        {
            "tasks": tasks,
            "fault_rate": fault_rate,
            "aws_requests": sum(n for k, n in faults.items() if k != "latency"),
            "faults_injected": injected,
            "faults_by_kind": {k: n for k, n in faults.items() if k not in ("forwarded", "latency")},
            "api_status_codes": dict(submitted.codes),
            "lost": len(lost),
            "extra_tasks_from_unkeyed_retries": extra,
            "succeeded_twice": len(twice),
            "seconds_to_drain": round(took, 1),
            "attempts_total": sum(t.attempts for t in found.values()),
        },
    )
