"""Section 7: the live streams, ``GET /v1/tasks/{id}/events`` and ``GET /v1/events``.

The API runs in-process under a real uvicorn server (one per stream, each in its own
thread with its own event loop, as two API processes would) over the memory adapters:
what is measured is the API's own cost (its watcher, its change feed, the SSE fan-out),
not AWS round trips, and the store reads counted are the calls the streams make, which
are the same whatever the store is. Both servers share one memory task store, each
through its own counting view, so each stream's reads are counted apart.

A run connects 1, then 10, then 50 clients to each stream (async httpx clients in the
harness's own event loop). While they are connected the harness writes a progress change
to a running task at a random phase of the polls, and times, for every client, the
moment it reads that change off its stream, from the moment the store write returned.
The store reads made by each stream over that window give its reads per second.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import uvicorn
from httpx_sse import aconnect_sse
from prometheus_client import CollectorRegistry

from api.app import create_app
from benchmarks.stack import TASKTYPE
from benchmarks.stats import Percentiles, percentile
from conveyor import tokens
from conveyor.clock import SYSTEM
from conveyor.engine import Engine, Submission
from conveyor.feed import INTERVAL_SECONDS as FEED_INTERVAL
from conveyor.memory import MemoryBroker, MemoryTaskStore, MemoryWorkerRegistry
from conveyor.model import Progress, Status, Task, now
from conveyor.ports import TaskStore
from conveyor.registry import RegistryWatcher
from conveyor.settings import Settings
from conveyor.watch import INTERVAL_SECONDS as WATCH_INTERVAL

STREAMS = ("task", "events")
LABELS = {"task": "`GET /v1/tasks/{id}/events`", "events": "`GET /v1/events`"}
DEADLINE = 20.0  # seconds for clients to connect or a change to reach them: else the run fails


@dataclass
class LiveRun(Percentiles):
    stream: str  # "task" or "events"
    clients: int
    seconds: float  # the measured window
    reads: int  # store calls the stream's API process made in the window
    samples: list[float]  # store write returned -> a client read the change; every client, every change

    @property
    def p95(self) -> float:
        return percentile(self.samples, 95)

    @property
    def reads_per_second(self) -> float:
        return self.reads / self.seconds if self.seconds > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"p50": self.p50, "p95": self.p95, "reads_per_second": self.reads_per_second}


class CountingStore:
    """A view of a shared store that counts the calls made through it, by method."""

    def __init__(self, inner: MemoryTaskStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    @property
    def reads(self) -> int:
        return sum(self.calls.values())

    def get(self, task_id: str, consistent: bool = False) -> Task | None:
        self.calls["get"] += 1
        return self.inner.get(task_id, consistent)

    def get_many(self, task_ids: Any) -> dict[str, Task]:
        self.calls["get_many"] += 1
        return self.inner.get_many(task_ids)

    def query(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["query"] += 1
        return self.inner.query(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # writes and the rest: not reads, not counted
        return getattr(self.inner, name)


class Server:
    """uvicorn over an app on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + DEADLINE
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@dataclass
class Side:
    """One stream's API: its app, server and counting view of the store."""

    stream: str
    app: Any
    server: Server
    counted: CountingStore

    def subscribers(self) -> int:
        state = self.app.state.conveyor
        if self.stream == "task":
            # Read from another thread: a resize mid-sum is retried on the next look.
            try:
                return cast(int, state.watcher.subscribers)
            except RuntimeError:
                return -1
        return cast(int, state.feed.subscribers) if state.feed.poll.primed else -1


@dataclass
class Live:
    store: MemoryTaskStore
    sides: dict[str, Side]
    token: str


@contextmanager
def running() -> Iterator[Live]:
    """Both API servers over one memory store, auth on (a token file in a temp dir)."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="conveyor-live-")))
        (tmp / "tasktypes").mkdir()
        (tmp / "tasktypes" / "bench-noop.yaml").write_text(TASKTYPE)
        token = tokens.generate_token()
        entry = tokens.TokenEntry("bench", tokens.hash_token(token), frozenset(tokens.SCOPES))
        tokens.write_tokens_file(tmp / "tokens.json", tokens.TokenSet([entry]))
        settings = Settings(
            tasktypes=str(tmp / "tasktypes"),
            auth_tokens_file=str(tmp / "tokens.json"),
            # 50 clients connect at once with one token: the per-token limit would refuse them.
            rate_limit="off",
            scheduler_enabled=False,
            maintenance_enabled=False,
        )
        store = MemoryTaskStore(clock=SYSTEM)
        sides: dict[str, Side] = {}
        for stream in STREAMS:
            counted = CountingStore(store)
            engine = Engine(
                settings,
                cast(TaskStore, counted),
                MemoryBroker(settings.visibility_timeout, clock=SYSTEM),
                MemoryBroker(settings.visibility_timeout, clock=SYSTEM),
                RegistryWatcher(settings.tasktypes),
                workers=MemoryWorkerRegistry(SYSTEM),
                clock=SYSTEM,
            )
            app = create_app(engine, CollectorRegistry())
            server = stack.enter_context(Server(app))
            sides[stream] = Side(stream, app, server, counted)
        yield Live(store, sides, token)


def _claimed(live: Live) -> Task:
    """A running task, moved by the harness writing to the store as a worker would."""
    engine = live.sides["task"].app.state.conveyor.engine
    task, _ = engine.submit(Submission("bench-noop", {}))
    return cast(Task, live.store.claim(task.id, task.type, "bench-live", now()).task)


def _fraction(stream: str, task_id: str, data: dict[str, Any]) -> float | None:
    if stream == "task":
        return cast(float, data.get("fraction"))
    if data.get("id") != task_id:  # the feed carries every task: an earlier window's too
        return None
    progress = data.get("progress") or {}
    return cast(float | None, progress.get("fraction"))


async def _follow(
    http: httpx.AsyncClient, stream: str, task_id: str, path: str, seen: dict[float, float]
) -> None:
    """Read a stream, noting when each progress fraction was first read."""
    async with aconnect_sse(http, "GET", path) as source:
        source.response.raise_for_status()
        async for sse in source.aiter_sse():
            # A state event carries the progress too (a task first listed with it set).
            if sse.event in ("progress", "state"):
                fraction = _fraction(stream, task_id, json.loads(sse.data))
                if fraction is not None:
                    seen.setdefault(fraction, time.monotonic())


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"live streams: timed out waiting for {what}")
        await asyncio.sleep(0.005)


def _alive(followers: list[asyncio.Task[None]]) -> None:
    """Raise what broke a client's stream, if one did."""
    for follower in followers:
        if follower.done():
            follower.result()
            raise RuntimeError("live streams: a stream ended early")


async def _window(live: Live, clients: int, changes: int) -> list[LiveRun]:
    """``clients`` clients on each stream, ``changes`` changes timed; one LiveRun per stream."""
    task = _claimed(live)
    paths = {"task": f"/v1/tasks/{task.id}/events", "events": "/v1/events"}
    seen = {s: [dict[float, float]() for _ in range(clients)] for s in STREAMS}
    timeout = httpx.Timeout(10.0, read=60.0)
    limits = httpx.Limits(max_connections=clients + 2)
    headers = {"Authorization": f"Bearer {live.token}"}
    async with (
        httpx.AsyncClient(
            base_url=live.sides["task"].server.url, headers=headers, timeout=timeout, limits=limits
        ) as on_task,
        httpx.AsyncClient(
            base_url=live.sides["events"].server.url, headers=headers, timeout=timeout, limits=limits
        ) as on_events,
    ):
        https = {"task": on_task, "events": on_events}
        followers = [
            asyncio.create_task(_follow(https[s], s, task.id, paths[s], seen[s][n]))
            for s in STREAMS
            for n in range(clients)
        ]
        try:
            sides = live.sides.values()

            def connected() -> bool:
                _alive(followers)
                # The feed has listed the task: what follows is a change to a task it follows.
                known = task.id in live.sides["events"].app.state.conveyor.feed.poll.known
                return known and all(side.subscribers() == clients for side in sides)

            await _until(connected, "clients to connect")
            before = {s: live.sides[s].counted.reads for s in STREAMS}
            started = time.monotonic()
            samples: dict[str, list[float]] = {s: [] for s in STREAMS}
            # A random phase against both polls (0.5 s and 1 s): the slower one's period.
            span = max(WATCH_INTERVAL, FEED_INTERVAL)
            for n in range(1, changes + 1):
                await asyncio.sleep(random.uniform(0, span))
                change = Progress.checked(n / (changes + 1), None, 1, now())
                fraction = change.fraction  # as stored and sent (rounded)
                live.store.record_progress(task, change, [])
                written = time.monotonic()

                def arrived(fraction: float = fraction) -> bool:
                    _alive(followers)
                    return all(fraction in s for stream in STREAMS for s in seen[stream])

                await _until(arrived, f"change {n} to reach {clients} client(s)")
                for stream in STREAMS:
                    delays = [s[fraction] - written for s in seen[stream]]
                    # Read before it was written: an event of something else was taken for it.
                    if min(delays) < 0:
                        raise RuntimeError(
                            f"live streams: a {stream} client saw change {n} before it was made"
                        )
                    samples[stream] += delays
            seconds = time.monotonic() - started
            reads = {s: live.sides[s].counted.reads - before[s] for s in STREAMS}
        finally:
            for follower in followers:
                follower.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
    live.store.finish(task, Status.SUCCEEDED, now(), result={})
    # Both processes let go of their clients (the watcher and the feed stop) before the next window.
    await _until(lambda: all(side.subscribers() <= 0 for side in live.sides.values()), "streams to close")
    return [LiveRun(s, clients, seconds, reads[s], samples[s]) for s in STREAMS]


def measure(
    clients: list[int], changes: int, runs: int, progress: Callable[[str], None] = print
) -> list[LiveRun]:
    out: list[LiveRun] = []
    with running() as live:
        for run in range(runs):
            for count in clients:
                found = asyncio.run(_window(live, count, changes))
                out += found
                task_run, events_run = found
                progress(
                    f"live run {run + 1}, {count} client(s): change to client p50 "
                    f"{task_run.p50 * 1000:.0f} / {events_run.p50 * 1000:.0f} ms, store reads/s "
                    f"{task_run.reads_per_second:.2f} / {events_run.reads_per_second:.2f} (task / events)"
                )
    return out
