"""Events from inside worker processes to the harness, over loopback UDP.

A handler (or a Celery signal) sends ``"<kind> <run> <task id> <unix time>"``; the harness
counts and timestamps them. UDP: a send costs microseconds and never blocks a handler,
and on loopback nothing is lost at these rates (the harness checks the totals anyway).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

ENV = "BENCH_EVENTS"  # host:port of the harness's collector

_sock: socket.socket | None = None
_target: tuple[str, int] | None = None


def emit(kind: str, run: str, task_id: str) -> None:
    """Send one event to the collector named by $BENCH_EVENTS (a no-op without it)."""
    global _sock, _target
    if _target is None:
        spec = os.environ.get(ENV, "")
        if not spec:
            return
        host, _, port = spec.rpartition(":")
        _target = (host, int(port))
        _sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert _sock is not None
    _sock.sendto(f"{kind} {run} {task_id} {time.time():.6f}".encode(), _target)


@dataclass
class Collector:
    """Receives events in a thread; ``wait(kind, run, n)`` blocks until n have arrived."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    times: dict[tuple[str, str], dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    cond: threading.Condition = field(default_factory=threading.Condition)
    thread: threading.Thread | None = None

    def start(self) -> Collector:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._loop, daemon=True, name="bench-events")
        self.thread.start()
        return self

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()
        return f"{host}:{port}"

    def _loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(512)
            except OSError:
                return
            try:
                kind, run, task_id, at = data.decode().split()
                stamp = float(at)
            except ValueError:
                continue
            with self.cond:
                # The first event per task counts: a duplicate delivery must not move it.
                self.times[(kind, run)].setdefault(task_id, stamp)
                self.cond.notify_all()

    def count(self, kind: str, run: str) -> int:
        with self.cond:
            return len(self.times.get((kind, run), {}))

    def wait(self, kind: str, run: str, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.times.get((kind, run), {})) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def wait_for(self, kind: str, run: str, task_id: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while (stamp := self.times.get((kind, run), {}).get(task_id)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return stamp

    def last(self, kind: str, run: str) -> float:
        with self.cond:
            return max(self.times.get((kind, run), {}).values(), default=0.0)

    def close(self) -> None:
        self.sock.close()
