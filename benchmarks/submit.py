"""Section 5: submit throughput and latency with 1, 10 and 50 concurrent clients.

Conveyor: ``POST /v1/tasks`` to the real API process (auth on). Beside it, what a submit
costs the others: Celery's ``send_task`` (one SendMessage, no record) and the floor's
``PutItem`` + ``SendMessage`` from boto3. No worker runs; the queue is purged between
runs (received and deleted straight
from moto) so its depth never grows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.stack import Stack
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

    @property
    def throughput(self) -> float:
        return len(self.samples) / self.seconds

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

    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        for future in [pool.submit(timed) for _ in range(count)]:
            future.result()
        seconds = time.perf_counter() - start
    return SubmitRun(system.key, clients, seconds, samples)


def measure(
    stack: Stack,
    count: int,
    runs: int,
    keys: list[str] | None = None,
    clients: list[int] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[SubmitRun]:
    results = []
    for key in keys or SYSTEMS:
        system = get(stack, key)
        system.quiesce()
        for _ in range(3):  # connections, queue URL look-ups: not measured
            system.submit_one("submit-warmup")
        for c in clients or CLIENTS:
            for r in range(runs):
                stack.drain(system.queue_url)
                run = one_run(system, f"submit-{key}-{c}-{r}", c, count)
                results.append(run)
                progress(
                    f"submit {key} x{c} run {r + 1}: {run.throughput:.1f}/s, p50 {run.p50 * 1000:.0f} ms"
                )
        stack.drain(system.queue_url)
    return results
