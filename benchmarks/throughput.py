"""Sections 1-3 and 6: end-to-end throughput, AWS requests per task, worker peak RSS.

Every system's processes start once and stay up; for each added latency the systems take
turns, run by run. A run submits N no-op tasks (``SUBMITTERS`` concurrent clients) while
the system's one worker process consumes, and the clock stops when the N-th task is
terminal. Before the next run the harness waits for the queue to be empty, so the counts
(the proxy's, for this system's queue and table only) include every delete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.stack import DepthSampler, Stack, peak_rss_mb, tree_cpu
from benchmarks.systems import ConveyorSystem, System, get


@dataclass
class Run:
    system: str
    latency_ms: float
    n: int
    seconds: float
    submit_seconds: float
    max_depth: int
    requests: dict[str, int]
    items: dict[str, int]
    cpu: dict[str, float]
    rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"throughput": self.throughput}


def one_run(stack: Stack, system: System, run: str, n: int, latency_ms: float, timeout: float) -> Run:
    assert stack.proxy is not None and system.worker is not None
    if isinstance(system, ConveyorSystem):
        system.mark(run)
    stack.proxy.reset()
    pids = system.cpu_pids()
    cpu0 = {"moto": stack.moto_cpu(), "proxy": stack.proxy_cpu()} | {k: tree_cpu(p) for k, p in pids.items()}
    with DepthSampler(stack, system.queue_url) as depth:
        start = time.time()
        system.submit_many(run, n)
        submitted = time.time()
        end = system.wait_done(run, n, timeout)
        wall = time.time() - start
        # Deletes trail the finish by up to a second (they go ten at a time): wait for them
        # so they are counted.
        stack.wait_empty(system.queue_url)
    counts = stack.proxy.counts(system.tags)
    cpu1 = {"moto": stack.moto_cpu(), "proxy": stack.proxy_cpu()} | {k: tree_cpu(p) for k, p in pids.items()}
    cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    # A system with several worker processes: "worker" is all of them, as for one.
    if "worker-2" in cpu:
        cpu["worker"] = sum(v for k, v in cpu.items() if k == "worker" or k.startswith("worker-"))
    return Run(
        system=system.key,
        latency_ms=latency_ms,
        n=n,
        seconds=max(end - start, 1e-6),
        submit_seconds=submitted - start,
        max_depth=depth.max,
        requests=counts["requests"],
        items=counts["items"],
        cpu=cpu | {"wall": wall},
        rss_mb=peak_rss_mb(system.worker.pid),
    )


def measure(
    stack: Stack,
    keys: list[str],
    latencies: list[float],
    n: int,
    runs: int,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Run]:
    """Every system's worker runs for the whole measurement, and the runs take turns (run 1
    of each system, then run 2 of each, ...), so a drift in the machine's speed falls on all
    systems alike rather than on whichever ran then. Idle workers long-poll meanwhile."""
    assert stack.proxy is not None
    results: list[Run] = []
    systems = [get(stack, key) for key in keys]
    try:
        for system in systems:
            system.start_worker()
        for latency in latencies:
            stack.proxy.set_delay(latency)
            for r in range(runs):
                for system in systems:
                    tag = f"{system.key}-{latency:g}ms-{r}"
                    run = one_run(stack, system, tag, n, latency, timeout=max(120.0, n * 1.0))
                    system.expected += n
                    results.append(run)
                    progress(f"{system.key} +{latency:g} ms run {r + 1}: {run.throughput:.1f} tasks/s")
        for system in systems:
            stack.verify(system)
    finally:
        stack.proxy.set_delay(0)
        for system in systems:
            system.stop_worker()
    return results
