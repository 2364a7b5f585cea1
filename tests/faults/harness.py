"""Real service processes for the fault tests: the API under uvicorn and workers, each
configured only through the environment, as in a cluster."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from conveyor.bootstrap import Runtime
from conveyor.local import wait_http
from conveyor.settings import Settings
from tests import conftest
from tests.conftest import ROOT
from tests.support.servers import free_port

# Figures of each run, for docs/RELIABILITY.md.
ARTIFACTS = ROOT / "test-artifacts" / "reliability"
# The heavy runs: only `make chaos` selects them (pyproject's addopts deselect them).
CHAOS = [pytest.mark.chaos, pytest.mark.timeout(900)]


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    return conftest.service_env(settings, "tests.faults.handlers", **extra)


class Api:
    def __init__(self, settings: Settings, log: Path | None = None, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        out: IO[bytes] | int = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.main"],
            env=service_env(settings, CONVEYOR_API_PORT=str(self.port), **env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        wait_http(self.url + "/healthz", proc=self.proc)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def spawn_worker(settings: Settings, log: Path | None = None, **env: str) -> subprocess.Popen[bytes]:
    out: IO[bytes] | int = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "worker.main"],
        env=service_env(settings, **env),
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every process added is killed at the end, whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def unfinished(runtime: Runtime) -> int:
    counts = runtime.engine.store.count_by_status()
    return sum(n for s, n in counts.items() if not s.terminal)


def all_tasks(runtime: Runtime) -> list[Any]:
    out, cursor = [], None
    while True:
        page = runtime.engine.query(None, None, 200, cursor)
        out += page.items
        cursor = page.next_cursor
        if not cursor:
            return out


def wait_terminal(runtime: Runtime, timeout: float, poll: float = 0.5) -> float:
    """Seconds until no task is queued or running; fails with the counts on timeout."""
    start = time.monotonic()
    while unfinished(runtime):
        if time.monotonic() - start > timeout:
            counts = {s.value: n for s, n in runtime.engine.store.count_by_status().items()}
            raise AssertionError(f"tasks still unfinished after {timeout}s: {counts}")
        time.sleep(poll)  # each look is five index queries, which moto answers by scanning
    return time.monotonic() - start


def record(name: str, figures: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    figures = {"test": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")


class Backlog:
    """Caps tasks submitted and not yet done: a slot is freed per ``done`` line the test
    handler writes (read from its file, not from moto). moto's SQS does work in proportion
    to the queue's depth on every call (measured: ReceiveMessage + visibility changes for
    10 messages take 70 ms at depth 0, 3.1 s at depth 1,500), which real SQS does not; an
    unbounded backlog would measure moto, not Conveyor."""

    def __init__(self, effects: Path, limit: int) -> None:
        self.effects = effects
        self.slots = threading.Semaphore(limit)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Backlog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _watch(self) -> None:
        offset = 0
        while not self._stop.wait(0.05):
            if not self.effects.exists():
                continue
            with open(self.effects, "rb") as f:
                f.seek(offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            offset += len(complete)
            for _ in range(complete.count(b"done ")):
                self.slots.release()


@dataclass
class Submitted:
    """What the clients saw: accepted ids, every status code, every 503's Retry-After."""

    accepted: list[str] = field(default_factory=list)
    codes: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds per successful submit call
    retry_after_missing: int = 0
    bodies_5xx: list[str] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def submit_many(
    url: str,
    payloads: list[dict[str, Any]],
    headers: dict[str, str],
    clients: int = 8,
    task_type: str = "fault-count",
    retries: int = 20,
    keyed: bool = True,
    backlog: Backlog | None = None,
) -> Submitted:
    """Submit every payload from ``clients`` threads, as a careful client would: on 503 wait
    Retry-After (capped at 1 s to keep tests short) and try again. With ``keyed`` only every
    other task carries an Idempotency-Key (which makes a retry safe); the rest take the
    plain PutItem path."""
    out = Submitted()
    lock = threading.Lock()
    run = uuid.uuid4().hex[:8]  # keys unique to this call

    def one(http: httpx.Client, n: int, payload: dict[str, Any]) -> None:
        key = {"Idempotency-Key": f"{run}-{n}"} if keyed and n % 2 == 0 else {}
        if backlog is not None:
            backlog.slots.acquire()
        for _ in range(retries):
            start = time.perf_counter()
            try:
                r = http.post(
                    "/v1/tasks",
                    json={"type": task_type, "payload": payload},
                    headers=key,
                )
            except httpx.TransportError as exc:
                raise AssertionError(f"the API dropped a connection: {exc!r}") from exc
            took = time.perf_counter() - start
            with lock:
                out.codes[r.status_code] += 1
                if r.status_code >= 500:
                    out.bodies_5xx.append(r.text[:300])
                if r.status_code in (200, 202):
                    out.latencies.append(took)
                    out.accepted.append(r.json()["id"])
                    return
                if r.status_code == 503 and not r.headers.get("retry-after", "").isdigit():
                    out.retry_after_missing += 1
            if r.status_code != 503:
                raise AssertionError(f"submit answered {r.status_code}: {r.text[:300]}")
            time.sleep(min(1.0, float(r.headers.get("retry-after") or 1)))
        raise AssertionError(f"task {n} not accepted after {retries} tries")

    def worker(chunk: list[tuple[int, dict[str, Any]]]) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            for n, payload in chunk:
                one(http, n, payload)

    chunks = [list(enumerate(payloads))[i::clients] for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(worker, c) for c in chunks if c]:
            future.result()
    return out
