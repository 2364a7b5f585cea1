"""The API's own CPU per submit: one real API process (``python -m api.main``, bearer-token
auth on, the shipped per-token rate limit counting but set high enough never to refuse)
over the bench's moto server and proxy, N sequential keep-alive submits from this process,
the API process's CPU read from /proc around each run. moto runs in its own process, so
none of its CPU is counted; the client's is not either.

``python -m benchmarks.submit_cpu [N] [RUNS]``; ``measure(stack, n, runs)`` for a harness
that already has a ``Stack`` running.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass

import httpx

from benchmarks.stack import Stack, cpu_seconds, unique
from conveyor.local import free_port, wait_http

# Counted per request as shipped, never refusing one: its CPU is part of a submit's.
RATE_LIMIT = "1000000/second;10000000/minute"
BODY = {"type": "bench-noop", "payload": {"message": "hello", "n": 1}}


@dataclass(frozen=True)
class SubmitCpu:
    runs_ms: tuple[float, ...]  # CPU ms per submit, one figure per run

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms)

    def __str__(self) -> str:
        return (
            f"API CPU per submit: {self.median_ms:.2f} ms median "
            f"({min(self.runs_ms):.2f}-{max(self.runs_ms):.2f}) over {len(self.runs_ms)} runs"
        )


def measure(stack: Stack, n: int = 500, runs: int = 5) -> SubmitCpu:
    from conveyor.aws import AwsBackend
    from conveyor.aws.provision import provision
    from conveyor.settings import Settings

    name = unique("cpu")
    settings = Settings.from_env(queue=name, dlq=name + "-dlq", table=name, bucket=name)
    provision(AwsBackend(settings), bucket=False)
    port = free_port()
    api = stack.spawn(
        f"{name}-api",
        ["-m", "api.main"],
        stack.child_env(
            CONVEYOR_QUEUE=settings.queue,
            CONVEYOR_DLQ=settings.dlq,
            CONVEYOR_TABLE=settings.table,
            CONVEYOR_BUCKET=settings.bucket,
            CONVEYOR_TASKTYPES=str(stack.tasktypes),
            CONVEYOR_LOG_LEVEL="WARNING",
            CONVEYOR_AUTH_TOKENS_FILE=str(stack.tokens_file),
            CONVEYOR_RATE_LIMIT=RATE_LIMIT,
            CONVEYOR_API_PORT=str(port),
            CONVEYOR_API_HOST="127.0.0.1",
        ),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", timeout=60, proc=api.proc)
        per_run = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {stack.token}"}) as http:
            for _ in range(50):  # warm: imports, connections, caches
                http.post("/v1/tasks", json=BODY).raise_for_status()
            for _ in range(runs):
                before = cpu_seconds(api.pid)
                for _ in range(n):
                    if http.post("/v1/tasks", json=BODY).status_code != 202:
                        raise RuntimeError("a measured submit was refused")
                per_run.append((cpu_seconds(api.pid) - before) / n * 1000)
        return SubmitCpu(tuple(per_run))
    finally:
        api.kill()


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 500
    runs = int(argv[1]) if len(argv) > 1 else 5
    with Stack().running() as stack:
        print(measure(stack, n, runs))


if __name__ == "__main__":
    main(sys.argv[1:])
