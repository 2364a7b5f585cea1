"""Section 5: submit throughput and latency with 1, 10 and 50 concurrent clients.

Conveyor: ``POST /v1/tasks`` to the real API process (auth on). Beside it, what a submit
costs the others: Celery's ``send_task`` (one SendMessage, no record) and the floor's
``PutItem`` + ``SendMessage`` from boto3. No worker runs; the queue is purged between
runs (received and deleted straight from moto) so its depth never grows. The systems take
turns run by run, as in the end-to-end runs, and each run reads the CPU of the system's own
processes (Conveyor's API process) from /proc.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.stack import Stack, tree_cpu
from benchmarks.stats import Percentiles
from benchmarks.systems import System, get

SYSTEMS = ["conveyor", "celery", "floor"]
CLIENTS = [1, 10, 50]


@dataclass
class SubmitRun(Percentiles):
    system: str
    clients: int
    seconds: float
    samples: list[float]
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of the system's processes

    @property
    def throughput(self) -> float:
        return len(self.samples) / self.seconds

    def cpu_per_submit(self, process: str = "api") -> float:
        """CPU seconds ``process`` spent per submit (NaN if the system has none)."""
        return self.cpu.get(process, float("nan")) / len(self.samples) if self.samples else float("nan")

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"throughput": self.throughput, "p50": self.p50, "p99": self.p99}


def one_run(system: System, run: str, clients: int, count: int) -> SubmitRun:
    samples: list[float] = []
    lock = threading.Lock()

    def timed() -> None:
        t = time.perf_counter()
        system.submit_one(run)
        took = time.perf_counter() - t
        with lock:
            samples.append(took)

    pids = system.cpu_pids()
    with ThreadPoolExecutor(clients) as pool:
        # "client": the harness process, where the submitting threads run (for the floor
        # and Celery, the whole of a submit's own CPU; for Conveyor, its HTTP client).
        cpu0 = {k: tree_cpu(p) for k, p in pids.items()} | {"client": time.process_time()}
        start = time.perf_counter()
        for future in [pool.submit(timed) for _ in range(count)]:
            future.result()
        seconds = time.perf_counter() - start
        cpu = {k: tree_cpu(p) - cpu0[k] for k, p in pids.items()}
        cpu["client"] = time.process_time() - cpu0["client"]
    return SubmitRun(system.key, clients, seconds, samples, cpu)


def measure(
    stack: Stack,
    count: int,
    runs: int,
    keys: list[str] | None = None,
    clients: list[int] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[SubmitRun]:
    results = []
    systems = [get(stack, key) for key in keys or SYSTEMS]
    for system in systems:
        system.quiesce()
        for _ in range(3):  # connections, queue URL look-ups: not measured
            system.submit_one("submit-warmup")
    # Interleaved: run 1 of each system, then run 2 of each, ...
    for c in clients or CLIENTS:
        for r in range(runs):
            for system in systems:
                stack.drain(system.queue_url)
                run = one_run(system, f"submit-{system.key}-{c}-{r}", c, count)
                results.append(run)
                progress(
                    f"submit {system.key} x{c} run {r + 1}: {run.throughput:.1f}/s, "
                    f"p50 {run.p50 * 1000:.0f} ms"
                )
    for system in systems:
        stack.drain(system.queue_url)
    return results
