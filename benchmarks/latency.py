"""Section 4: latency from submit to handler start on an idle system.

One task at a time: the client notes the time, submits, and waits for the handler's
start event (sent from inside the handler, same machine clock); then a short pause so
the previous task's finish and delete are out of the way. Default settings for every
system: Conveyor's worker as shipped, Celery's default prefork pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.stack import Stack
from benchmarks.stats import Percentiles, percentile
from benchmarks.systems import CelerySystem, System, get

SYSTEMS = ["conveyor", "celery", "floor"]
IDLE_GAP = 0.02  # seconds between tasks: the system is idle when the next one is sent
WARMUP = 3  # first calls open connections and look up queue URLs: not measured


@dataclass
class LatencyRun(Percentiles):
    system: str
    samples: list[float]  # submit call made -> handler started
    submit_samples: list[float] = field(default_factory=list)  # of which: the submit call itself

    @property
    def submit_p50(self) -> float:
        return percentile(self.submit_samples, 50)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"p50": self.p50, "p99": self.p99}


def sample(stack: Stack, system: System, run: str, count: int) -> LatencyRun:
    assert stack.events is not None
    result = LatencyRun(system.key, [])
    for _ in range(count):
        sent = time.time()
        task_id = system.submit_one(run)
        answered = time.time()
        started = stack.events.wait_for("start", run, task_id, timeout=60)
        if started is None:
            raise TimeoutError(f"{system.key}: task {task_id} did not start within 60 s")
        result.samples.append(started - sent)
        result.submit_samples.append(answered - sent)
        time.sleep(IDLE_GAP)
    return result


def measure(
    stack: Stack,
    count: int,
    runs: int,
    keys: list[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[LatencyRun]:
    results = []
    systems = [get(stack, key) for key in keys or SYSTEMS]
    try:
        for system in systems:
            # Celery as it comes: its default pool (prefork, one child per core).
            system.start_worker(**({"pool": ""} if isinstance(system, CelerySystem) else {}))
            sample(stack, system, f"lat-{system.key}-warmup", WARMUP)
            system.expected += WARMUP
        # Interleaved: run 1 of each system, then run 2 of each, ...; the others' workers
        # sit in their long polls meanwhile, as in the end-to-end runs.
        for r in range(runs):
            for system in systems:
                run = sample(stack, system, f"lat-{system.key}-{r}", count)
                system.expected += count
                results.append(run)
                progress(
                    f"latency {system.key} run {r + 1}: p50 {run.p50 * 1000:.0f} ms, "
                    f"p99 {run.p99 * 1000:.0f} ms"
                )
        for system in systems:
            stack.wait_empty(system.queue_url)
            stack.verify(system)
    finally:
        for system in systems:
            system.stop_worker()
    return results
