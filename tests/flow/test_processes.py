"""Fleet-wide limits held by real worker processes on the moto server (SQS and DynamoDB):
a concurrency limit across three workers, per key, across a kill -9, and a rate limit
across two. Each handler records its own start and end times; the limits are checked
on those."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.bootstrap import Runtime, build
from conveyor.engine import Submission
from conveyor.model import Status, Task
from tests.conftest import EXAMPLES, ROOT, service_env, wait_for
from tests.flow.flowhandlers import max_overlap, spans

TYPES = {
    "flow-max": "concurrency: {max: 2}",
    "flow-tenant": "concurrency: {max: 2, key: /tenant}",
    "flow-one": "concurrency: {max: 1}",  # one attempt: a killed one is not run again
    "flow-rate": "rateLimit: {limit: 10, period: 1, burst: 5}",
}
RATE, BURST = 10.0, 5


@pytest.fixture
def runtime(settings_factory, tmp_path: Path) -> Runtime:
    types = tmp_path / "tasktypes"
    types.mkdir()
    (types / "echo.yaml").write_text((EXAMPLES / "echo.yaml").read_text())
    for name, limit in TYPES.items():
        (types / f"{name}.yaml").write_text(
            textwrap.dedent(
                f"""\
                apiVersion: conveyor.dev/v1alpha1
                kind: TaskType
                metadata: {{name: {name}}}
                spec:
                  handler: test-span
                  maxAttempts: {1 if name == "flow-one" else 3}
                  timeoutSeconds: 60
                  {limit}
                """
            )
        )
    return build(settings_factory(tasktypes=str(types)))


class Workers:
    """Worker processes, their stderr kept in files (DEBUG: each wait is a line)."""

    def __init__(self, runtime: Runtime, tmp: Path) -> None:
        self.runtime, self.tmp = runtime, tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def spawn(self, **env: str) -> subprocess.Popen[bytes]:
        fast = {
            "CONVEYOR_POLL_WAIT_SECONDS": "1",
            "CONVEYOR_HEARTBEAT_SECONDS": "0.5",
            "CONVEYOR_LOG_LEVEL": "DEBUG",
            "CONVEYOR_WORKER_CONCURRENCY": "8",
        }
        variables = service_env(self.runtime.settings, "tests.flow.flowhandlers", **fast | env)
        log = self.tmp / f"worker-{len(self.procs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker.main"], env=variables, cwd=ROOT, stderr=out, stdout=out
            )
        self.procs.append(proc)
        return proc

    def waits(self, what: str) -> Counter[str]:
        """Wait lines per task id across every worker's log."""
        pattern = re.compile(rf"task (\w+) waits for {what}")
        return Counter(m.group(1) for log in self.logs for m in pattern.finditer(log.read_text()))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def workers(runtime: Runtime, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(runtime, tmp_path)
    yield pool
    pool.stop()


def submit_all(runtime: Runtime, task_type: str, payloads: list[dict]) -> list[Task]:
    return [runtime.engine.submit(Submission(task_type, p))[0] for p in payloads]


def all_done(runtime: Runtime, tasks: list[Task], timeout: float) -> list[Task]:
    def done() -> list[Task] | None:
        current = [runtime.engine.get(t.id) for t in tasks]
        return current if all(t.status.terminal for t in current) else None

    return wait_for(done, timeout=timeout, interval=0.25)


def test_three_workers_hold_a_fleet_limit_and_a_keyed_one(runtime, workers, tmp_path):
    # Both at once, on the same three workers (one run instead of two): 30 tasks of a type
    # limited to 2 across the fleet, and 30 of a type limited to 2 per tenant, 3 tenants.
    fleet_log, tenant_log = tmp_path / "fleet", tmp_path / "tenants"
    fleet = submit_all(runtime, "flow-max", [{"log": str(fleet_log), "seconds": 0.3} for _ in range(30)])
    tenants = ["a", "b", "c"]
    keyed = submit_all(
        runtime,
        "flow-tenant",
        [{"log": str(tenant_log), "seconds": 0.3, "tenant": tenants[n % 3]} for n in range(30)],
    )
    for _ in range(3):
        workers.spawn()
    done = all_done(runtime, fleet + keyed, timeout=60)
    assert all(t.status is Status.SUCCEEDED and t.attempts == 1 for t in done), done
    assert all(t.waiting is None for t in done)  # the claim cleared every wait

    ran = spans(fleet_log)
    assert len(ran) == 30 and all(attempt == 1 for _, attempt in ran)
    assert max_overlap([(s["start"], s["end"]) for s in ran.values()]) == 2
    assert len({s["pid"] for s in ran.values()}) >= 2  # the limit held across processes

    tenant_of = {t.id: t.payload["tenant"] for t in keyed}
    ran = spans(tenant_log)
    assert len(ran) == 30
    for tenant in tenants:
        mine = [(s["start"], s["end"]) for (tid, _), s in ran.items() if tenant_of[tid] == tenant]
        assert len(mine) == 10 and max_overlap(mine) <= 2, tenant
    # Keys are separate limits: more than one tenant's pair ran at once.
    assert max_overlap([(s["start"], s["end"]) for s in ran.values()]) > 2
    # Waits are re-sends a second or more apart, never a spin on the limit.
    assert max(workers.waits("a concurrency slot").values()) < 20


def test_a_killed_workers_slot_frees_within_its_lease(runtime, workers, tmp_path):
    log = tmp_path / "spans"
    lease = 2.0  # worker_dead_after: the lease of a slot
    env = {"CONVEYOR_WORKER_DEAD_AFTER_SECONDS": str(lease)}
    victim = workers.spawn(**env)
    first = submit_all(runtime, "flow-one", [{"log": str(log), "seconds": 30}])[0]
    wait_for(lambda: runtime.engine.get(first.id).status is Status.RUNNING, timeout=20)
    rest = submit_all(runtime, "flow-one", [{"log": str(log), "seconds": 0.2} for _ in range(3)])
    workers.spawn(**env)
    time.sleep(1.5)
    # The limit is held: the slot is the victim's, and nobody else started.
    assert {k[0] for k in spans(log)} == {first.id}
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)
    killed_at = time.time()
    done = all_done(runtime, rest, timeout=40)
    assert all(t.status is Status.SUCCEEDED and t.attempts == 1 for t in done), done
    ran = spans(log)
    next_start = min(s["start"] for (tid, _), s in ran.items() if tid != first.id)
    # Free within the lease (its last renewal was at most a heartbeat before the kill),
    # plus a re-send's wait and a receive.
    assert next_start - killed_at < lease + 0.5 + 10 + 2
    others = [(s["start"], s.get("end", s["start"])) for (tid, _), s in ran.items() if tid != first.id]
    assert max_overlap(others) == 1
    # The killed attempt was its last: it fails once its message comes back to a live worker.
    lost = all_done(runtime, [first], timeout=30)[0]
    assert lost.status is Status.FAILED and lost.error is not None and lost.error.type == "WorkerLost"


def test_two_workers_keep_a_rate_limit_and_each_throttled_task_waits_once(runtime, workers, tmp_path):
    log = tmp_path / "spans"
    tasks = submit_all(runtime, "flow-rate", [{"log": str(log)} for _ in range(60)])
    workers.spawn()
    workers.spawn()
    done = all_done(runtime, tasks, timeout=60)
    assert all(t.status is Status.SUCCEEDED and t.attempts == 1 for t in done), done
    starts = sorted(s["start"] for s in spans(log).values())
    assert len(starts) == 60
    # The n-th start comes no sooner than the bucket allows: n <= burst + rate * elapsed
    # (10% tolerance). Checked from the first start rather than in every short window: a
    # message that comes back late starts on arrival, and moto's long poll does not wake
    # for a delayed message coming due (it answers at the end of its wait), so late turns
    # can start together -- never more of them than the turns so far allow.
    for n, at in enumerate(starts, 1):
        assert n <= 1.1 * (BURST + RATE * (at - starts[0])) + 1e-9, (n, at - starts[0])
    # And the limit is a rate, not a stall: 60 starts take about (60 - burst) / rate.
    assert starts[-1] - starts[0] < 1.5 * (60 - BURST) / RATE + 2
    # Each throttled task reserved its turn once and waited once for it: no polling.
    waits = workers.waits("its rate-limit turn")
    assert waits and max(waits.values()) == 1
    assert len(waits) <= 60 - BURST
