"""What every measurement shares: one moto process, the proxy in front of it, the event
collector, and helpers for child processes (start, stop, CPU time, peak RSS)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.conveyor_handlers import TASKTYPE
from benchmarks.events import ENV as EVENTS_ENV
from benchmarks.events import Collector
from benchmarks.proxy import ProxyProcess
from conveyor import tokens
from conveyor.local import LOCAL_AWS, MotoServer, find_examples, free_port

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
_names = itertools.count()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def peak_rss_mb(pid: int) -> float:
    """VmHWM (the peak resident set) of a process, plus its live children's, in MiB."""
    total = 0.0
    for p in [pid, *children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
    return total


def tree_cpu(pid: int) -> float:
    return cpu_seconds(pid) + sum(cpu_seconds(c) for c in children(pid))


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


@dataclass
class Child:
    """A child process in its own process group, so a kill takes its pool with it."""

    name: str
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        # SIGKILL, not SIGTERM: a graceful stop waits out a 20 s long poll, and nothing is
        # left to drain -- the harness waits for the queue to be empty first.
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@dataclass
class Stack:
    """moto + the proxy + the event collector, for one ``make bench``."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="conveyor-bench-")))
    log_dir: Path | None = None
    moto: MotoServer | None = None
    proxy: ProxyProcess | None = None
    events: Collector | None = None
    children: list[Child] = field(default_factory=list)
    token: str = ""
    # Long-poll seconds for every worker; None = each system's default (Conveyor 20 s,
    # Celery 10 s, the floor 20 s). Smoke runs shorten it (see System.stop_worker).
    poll_wait: int | None = None
    systems: dict[str, Any] = field(default_factory=dict)  # set up once, shared by every part
    # Failed end-of-part checks (a system's records against what was submitted): reported
    # at the top of the report instead of ending a long run without any figures.
    problems: list[str] = field(default_factory=list)
    _direct: dict[str, Any] = field(default_factory=dict)

    def verify(self, system: Any) -> None:
        try:
            system.verify()
        except AssertionError as exc:
            self.problems.append(str(exc))

    def start(self) -> Stack:
        self.log_dir = self.log_dir or self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.moto = MotoServer(log=self.log_dir / "moto.log").start()
        self.proxy = ProxyProcess(self.moto.url, free_port()).start()
        self.events = Collector().start()
        # The harness's own AWS calls (provisioning, depth samples, checks) go straight to
        # moto: not counted, not delayed.
        os.environ.update(self.moto.env())
        tasktypes = self.tasktypes
        if not tasktypes.exists():
            shutil.copytree(find_examples(), tasktypes)
            (tasktypes / "bench-noop.yaml").write_text(TASKTYPE)
        # Auth stays on, as deployed: its cost per request is part of what is measured.
        self.token = tokens.generate_token()
        entry = tokens.TokenEntry("bench", tokens.hash_token(self.token), frozenset(tokens.SCOPES))
        tokens.write_tokens_file(self.tokens_file, tokens.TokenSet([entry]))
        return self

    def stop(self) -> None:
        for system in self.systems.values():
            with contextlib.suppress(Exception):
                system.teardown()
        for child in reversed(self.children):
            child.kill()
        if self.proxy:
            self.proxy.stop()
        if self.moto:
            self.moto.stop()
        if self.events:
            self.events.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[Stack]:
        try:
            yield self.start()
        finally:
            self.stop()

    @property
    def tasktypes(self) -> Path:
        return self.workdir / "tasktypes"

    @property
    def tokens_file(self) -> Path:
        return self.workdir / "tokens.json"

    @property
    def endpoint(self) -> str:
        """Where the systems under test reach AWS: the proxy."""
        assert self.proxy is not None
        return self.proxy.url

    def child_env(self, **extra: str) -> dict[str, str]:
        assert self.events is not None
        return {
            **os.environ,
            **LOCAL_AWS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            EVENTS_ENV: self.events.address,
            **extra,
        }

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        assert self.log_dir is not None
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115  (owned by the child)
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        child = Child(name, proc)
        self.children.append(child)
        return child

    def direct(self, service: str) -> Any:
        """A boto3 client straight to moto (bypassing the proxy)."""
        if service not in self._direct:
            import boto3

            assert self.moto is not None
            self._direct[service] = boto3.client(service, endpoint_url=self.moto.url, region_name="us-east-1")
        return self._direct[service]

    def moto_cpu(self) -> float:
        assert self.moto is not None and self.moto.proc is not None
        return cpu_seconds(self.moto.proc.pid)

    def proxy_cpu(self) -> float:
        assert self.proxy is not None and self.proxy.proc is not None
        return cpu_seconds(self.proxy.proc.pid)

    def depth(self, queue_url: str) -> int:
        attrs = self.direct("sqs").get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    def drain(self, queue_url: str) -> None:
        """Empty a queue between runs. Not PurgeQueue: SQS (and moto) allow one a minute."""
        sqs = self.direct("sqs")
        while True:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
                "Messages", []
            )
            if not messages:
                return
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
            )

    def wait_empty(self, queue_url: str, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.depth(queue_url) == 0:
                return True
            time.sleep(0.05)
        return False


class DepthSampler:
    """Samples a queue's depth (visible + in flight + delayed) twice a second, straight
    from moto, and keeps the maximum: moto's SQS slows down as a queue grows."""

    def __init__(self, stack: Stack, queue_url: str, period: float = 0.5) -> None:
        self.stack = stack
        self.queue_url = queue_url
        self.period = period
        self.max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="bench-depth")

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            with contextlib.suppress(Exception):
                self.max = max(self.max, self.stack.depth(self.queue_url))

    def __enter__(self) -> DepthSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
