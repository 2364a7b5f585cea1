"""AWS requests per task under fleet-wide limits: a real worker (in-process) on the moto
server runs the same tasks of three types -- no limit, a concurrency limit, a rate limit
-- and every request its boto3 clients send is counted, by service and operation.

    python -m benchmarks.flow [--tasks 100]

Counted from the first receive to the last task finished, so the figures include what
waiting costs: a task over a limit is received, read and re-sent again, and a concurrency
limit's waits repeat until a slot frees (a rate limit's wait once). Empty long polls
while the worker waits for re-sent messages count too (they are what an idle worker pays).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

TYPES = {
    "bench-free": "",
    "bench-roomy": "concurrency: {max: 50}",  # a slot always free: the limit's own cost
    "bench-concurrency": "concurrency: {max: 2}",  # a deep backlog on a small limit
    "bench-rate": "rateLimit: {limit: 50, period: 1, burst: 10}",
}


@dataclass
class Figures:
    task_type: str
    tasks: int
    seconds: float
    requests: Counter[str]

    @property
    def per_task(self) -> float:
        return sum(self.requests.values()) / self.tasks

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.task_type,
            "tasks": self.tasks,
            "seconds": round(self.seconds, 2),
            "requests_per_task": round(self.per_task, 2),
            "by_operation": {k: round(v / self.tasks, 2) for k, v in sorted(self.requests.items())},
        }


def write_types(target: Path) -> None:
    for name, limit in TYPES.items():
        (target / f"{name}.yaml").write_text(
            textwrap.dedent(
                f"""\
                apiVersion: conveyor.dev/v1alpha1
                kind: TaskType
                metadata: {{name: {name}}}
                spec:
                  handler: echo
                  {limit}
                """
            )
        )


def requests_per_task(settings: Any, task_type: str, tasks: int = 100) -> Figures:
    """Run ``tasks`` tasks of ``task_type`` through one in-process worker on ``settings``
    (provisioned); the worker's AWS requests, counted by ``service:Operation``."""
    from prometheus_client import CollectorRegistry

    from conveyor.bootstrap import build
    from conveyor.engine import Submission
    from conveyor.metrics import WorkerMetrics
    from worker import handlers
    from worker.runtime import Worker

    handlers.load()
    submitter = build(settings)
    runtime = build(settings)
    counted: Counter[str] = Counter()
    lock = threading.Lock()

    def count(model: Any, **_: Any) -> None:
        with lock:
            counted[f"{model.service_model.service_name}:{model.name}"] += 1

    for client in (runtime.backend.sqs, runtime.backend.dynamodb):
        client.meta.events.register("before-call", count)
    ids = [submitter.engine.submit(Submission(task_type, {"n": n}))[0].id for n in range(tasks)]
    worker = Worker(runtime.engine, WorkerMetrics(CollectorRegistry()))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(),), daemon=True)
    started = time.perf_counter()
    with lock:
        counted.clear()
    thread.start()
    pending = set(ids)
    while pending:
        time.sleep(0.2)
        pending = {i for i in pending if not submitter.engine.get(i).status.terminal}
    seconds = time.perf_counter() - started
    with lock:
        requests = Counter(counted)
    loop.call_soon_threadsafe(worker.request_stop)
    thread.join(30)
    return Figures(task_type, tasks, seconds, requests)


def measure(tasks: int = 100) -> list[Figures]:
    from conveyor.aws import AwsBackend
    from conveyor.aws.provision import provision
    from conveyor.local import MotoServer
    from conveyor.settings import Settings

    out = []
    server = MotoServer(log=None).start()
    saved = dict(os.environ)
    try:
        tmp = tempfile.mkdtemp(prefix="conveyor-flow-bench-")
        types = Path(tmp)
        write_types(types)
        os.environ.update(server.env())
        for n, task_type in enumerate(TYPES):
            base = Settings.from_env()
            settings = replace(
                base,
                queue=f"flow-bench-{n}",
                dlq=f"flow-bench-{n}-dlq",
                table=f"flow-bench-{n}",
                bucket=f"flow-bench-{n}",
                tasktypes=str(types),
                poll_wait_seconds=1,
                auth_enabled=False,
                scheduler_enabled=False,
                maintenance_enabled=False,
            )
            provision(AwsBackend(settings))
            out.append(requests_per_task(settings, task_type, tasks))
    finally:
        server.stop()
        # The server's endpoint and credentials go with it.
        os.environ.clear()
        os.environ.update(saved)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=100)
    args = p.parse_args(argv)
    for figures in measure(args.tasks):
        data = figures.to_json()
        print(
            f"{data['type']:<18} {data['tasks']} tasks in {data['seconds']} s: "
            f"{data['requests_per_task']} requests/task  {data['by_operation']}"
        )


if __name__ == "__main__":
    main()
