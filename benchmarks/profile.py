"""The Conveyor worker under py-spy, during one extra end-to-end run.

Not part of any figure (a sampler slows what it watches a little). py-spy, not
pyinstrument: the worker's AWS calls run in a thread pool, and py-spy samples every
thread. py-spy drops idle threads by asking the kernel; under some sandboxes (gVisor)
that fails, so samples whose innermost frame is a known blocking wait are dropped here
too, leaving shares of the worker's CPU. The raw stacks are kept in benchmarks/results/.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchmarks.stack import Stack
from benchmarks.systems import get

# Where a sampled frame's code lives, by path fragment, first match wins.
PACKAGES = [
    ("botocore/", "botocore (request signing, serialising, parsing)"),
    ("urllib3/", "urllib3 (HTTP)"),
    ("http/client", "http.client"),
    ("ssl.py", "ssl"),
    ("boto3/", "boto3"),
    ("prometheus_client/", "prometheus_client"),
    ("/json/", "json"),
    ("asyncio/", "asyncio (event loop)"),
    ("concurrent/futures", "thread pools"),
    ("threading.py", "thread pools"),
    ("conveyor/", "conveyor (engine, store, broker)"),
    ("worker/", "worker runtime"),
    ("benchmarks/", "the benchmark handler"),
    ("uuid.py", "uuid4 (botocore's per-request invocation id)"),
    ("socket", "sockets"),
    ("dateutil/", "dates"),
    ("datetime", "dates"),
]


# Innermost frames that mean "this thread is waiting", not running.
WAITS = (
    "_worker (concurrent/futures/thread.py",
    "SocketIO.readinto (socket.py",
    "select (selectors.py",
    "Condition.wait (threading.py",
    "do_poll (urllib3/util/wait.py",
    "socket.accept (socket.py",
)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def summarise(raw: str, top: int = 12) -> list[str]:
    """Self time by package and the heaviest functions (inclusive), from collapsed stacks."""
    by_package: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if "(" in f and not f.startswith(("process ", "thread "))]
        if not frames or frames[-1].startswith(WAITS) or ".select (selectors.py" in frames[-1]:
            continue
        total += count
        leaf = frames[-1]
        by_package[next((name for key, name in PACKAGES if key in leaf), "other")] += count
        for frame in {f.rsplit(":", 1)[0] + ")" for f in frames}:
            own = ("conveyor/" in frame or "worker/" in frame) and "worker/main.py" not in frame
            if own or frame.startswith("BaseClient._make_api_call"):
                inclusive[frame] += count
    if not total:
        return ["(no samples: py-spy could not read the worker)"]
    lines = [f"{total} on-CPU samples of the worker (all threads). Self time by package:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in by_package.most_common()]
    lines += ["Heaviest Conveyor frames, and all boto3 calls (inclusive):"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return lines


def profile_worker(stack: Stack, n: int, out: Path) -> list[str]:
    spy = py_spy()
    if spy is None:
        return ["(py-spy is not installed: `pip install -e '.[bench]'`)"]
    system = get(stack, "conveyor")
    sampler = None
    try:
        worker = system.start_worker()
        sampler = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(worker.pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        system.submit_many("profile", n)
        system.wait_done("profile", n, timeout=max(120.0, n * 1.0))
        system.expected += n
        stack.wait_empty(system.queue_url)
    finally:
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                sampler.wait(30)
            except subprocess.TimeoutExpired:
                sampler.kill()
        system.stop_worker()
    if not out.exists():
        return ["(py-spy wrote no profile: is ptrace allowed here?)"]
    return summarise(out.read_text())
