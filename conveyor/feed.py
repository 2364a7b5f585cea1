"""The change feed: one poller per API process turns store reads into task state changes
for every ``GET /v1/events`` subscriber of the process.

The store has no index on ``updated_at``, so the feed reads what it can read cheaply and
compares with what it saw last time:

- the newest ``NEWEST`` tasks of every status (the status partitions merged): a task
  created since the last poll shows even if it started and ended in between;
- the newest ``TRACKED_QUEUED`` tasks of ``status-index`` for ``queued`` (the young
  backlog whose moves it follows);
- all of ``status-index`` for ``running`` (bounded by the fleet's concurrency; carries
  progress, as that index projects every attribute);
- one ``get_many`` for the tasks it followed that left both listings (they finished, or
  were cancelled): their new state.

A poll is thus seven Query pages (five for the newest, more only past 200 running tasks; each
x 1 + n with n status shards, conveyor/aws/shards.py) plus at most one
BatchGetItem per 100 tasks that ended, whatever the number of subscribers; nothing runs
while nobody subscribes. What it cannot see: a task deeper in the queued backlog than
``TRACKED_QUEUED`` that is cancelled, or starts and ends within one interval, and more
than ``NEWEST`` tasks created within one interval that end within it (a list reload
shows them).

Each change gets an id ``<updated_at ms>-<task id>``, the same on every replica (all read
the same records), so a client's ``Last-Event-ID`` resumes on any of them: the feed keeps
the last ``KEEP_CHANGES`` changes, at most ``KEEP_SECONDS`` old, and tells a client whose
id is older than that to start over (``reset``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor.model import Status, Task
from conveyor.ports import TaskStore

log = logging.getLogger("conveyor.feed")

INTERVAL_SECONDS = 1.0
TRACKED_QUEUED = 500
NEWEST = 100
RUNNING_PAGE = 200
KEEP_CHANGES = 1000
KEEP_SECONDS = 600
_ID = re.compile(r"^(\d{1,15})-([0-9A-Z]{26})$")


def _ms(value: datetime | None) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


def _version(task: Task) -> tuple[str, int, int]:
    return (task.status.value, _ms(task.updated_at), _ms(task.progress.at) if task.progress else 0)


Key = tuple[int, str]


def parse_id(raw: str | None) -> Key | None:
    """The position of a ``Last-Event-ID``; None without one; ValueError if it is not ours."""
    if raw is None or not raw.strip():
        return None
    match = _ID.match(raw.strip())
    if match is None:
        raise ValueError(raw)
    return int(match.group(1)), match.group(2)


@dataclass(frozen=True)
class Change:
    seq: int  # this process's order of discovery
    kind: str  # "state" (a status or record change) or "progress"
    task: Task
    seen_at: float  # monotonic

    @property
    def key(self) -> Key:
        progress = self.task.progress
        at = self.task.updated_at if self.kind == "state" or progress is None else progress.at
        return _ms(at), self.task.id

    @property
    def id(self) -> str:
        return f"{self.key[0]}-{self.task.id}"


class Poll:
    """The store reads of one poll and what they mean, without a loop or a clock: the
    part the tests drive step by step."""

    def __init__(self, store: TaskStore, tracked_queued: int = TRACKED_QUEUED, newest: int = NEWEST) -> None:
        self.store, self.tracked_queued, self.newest = store, tracked_queued, newest
        self.known: dict[str, tuple[str, int, int]] = {}  # followed tasks: their last version
        self.ended: dict[str, tuple[str, int, int]] = {}  # finished ones still among the newest
        self.primed = False
        self.reads = 0  # store calls: what the feed costs
        self.polls = 0

    def _listing(self, status: Status | None, most: int | None) -> list[Task]:
        found: list[Task] = []
        cursor = None
        while True:
            # The queued window in one request (500 items fit DynamoDB's 1 MB page).
            limit = RUNNING_PAGE if most is None else most - len(found)
            self.reads += 1
            page = self.store.query(status, None, limit, cursor)
            found += page.items
            cursor = page.next_cursor
            if cursor is None or (most is not None and len(found) >= most):
                return found

    def run(self) -> list[tuple[str, Task]]:
        """One poll: the (kind, task) changes since the previous one, oldest update first.
        The first poll only learns the current state."""
        self.polls += 1
        newest = {t.id: t for t in self._listing(None, self.newest)}
        seen = dict(newest)
        seen |= {t.id: t for t in self._listing(Status.QUEUED, self.tracked_queued)}
        seen |= {t.id: t for t in self._listing(Status.RUNNING, None)}
        gone = [task_id for task_id in self.known if task_id not in seen]
        left: dict[str, Task] = {}
        if gone:
            self.reads += 1
            left = self.store.get_many(gone)
        # A task still queued that left the listing was pushed past the newest
        # ``tracked_queued`` by newer ones: no longer followed (it shows again when it runs).
        seen |= {
            i: t for i, t in left.items() if t.status is not Status.QUEUED or _version(t) != self.known[i]
        }
        changes: list[tuple[str, Task]] = []
        for task in seen.values():
            now, before = _version(task), self.known.get(task.id) or self.ended.get(task.id)
            if self.primed and now != before:
                progressed = before is not None and now[:2] == before[:2]
                changes.append(("progress" if progressed else "state", task))
        self.known = {i: _version(t) for i, t in seen.items() if not t.status.terminal}
        # A finished task stays in the newest listing for a while: remembered, it is not
        # reported again each poll.
        self.ended = {i: _version(t) for i, t in seen.items() if t.status.terminal and i in newest}
        self.primed = True
        changes.sort(key=lambda c: (_ms(c[1].updated_at), c[1].id))
        return changes


class Subscriber:
    def __init__(self, feed: ChangeFeed, after: int) -> None:
        self.feed, self.after = feed, after
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def changes(self, timeout: float | None = None) -> list[Change] | None:
        """The changes after the last ones returned (waiting at most ``timeout`` s for one);
        None when this subscriber fell behind what the feed keeps."""
        if not self._pending():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()
        buffer = self.feed.buffer
        if buffer and buffer[0].seq > self.after + 1:
            return None
        out = [c for c in buffer if c.seq > self.after]
        if out:
            self.after = out[-1].seq
        return out

    def _pending(self) -> bool:
        return bool(self.feed.buffer) and self.feed.buffer[-1].seq > self.after


class ChangeFeed:
    def __init__(
        self,
        store: TaskStore,
        interval: float = INTERVAL_SECONDS,
        keep: int = KEEP_CHANGES,
        keep_seconds: float = KEEP_SECONDS,
        run_blocking: Callable[..., Any] | None = None,
    ) -> None:
        self.poll = Poll(store)
        self.interval, self.keep, self.keep_seconds = interval, keep, keep_seconds
        self.buffer: deque[Change] = deque()
        self.seq = 0
        # Changes before this key may be missing here (before the feed ran, or dropped).
        self.complete_after: Key = (int(time.time() * 1000), "")
        self._subscribers: set[Subscriber] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._run_blocking = run_blocking or asyncio.to_thread

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def replay(self, after: Key) -> list[Change] | None:
        """What a client that saw up to ``after`` has missed; None if the feed cannot tell."""
        if after < self.complete_after:
            return None
        return [c for c in self.buffer if c.key > after]

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscriber]:
        sub = Subscriber(self, self.seq)
        self._subscribers.add(sub)
        self._ensure_running()
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        running = self._loop_task
        if running is None or running.done() or running.get_loop() is not loop:
            if not self.poll.primed:
                self.complete_after = (int(time.time() * 1000), "")
            self._loop_task = loop.create_task(self._run(), name="conveyor-change-feed")

    async def _run(self) -> None:
        while self._subscribers:
            try:
                found = await self._run_blocking(self.poll.run)
            except Exception as exc:  # a store outage: keep the clients, try again next time
                log.warning("change feed: polling the store failed: %s", exc)
            else:
                self.publish(found)
            await asyncio.sleep(self.interval)
        # Nobody listens: the next subscriber starts from a fresh view of the store.
        self.poll.primed = False
        self.poll.known.clear()
        self.poll.ended.clear()
        self._trim(everything=True)

    def publish(self, found: Iterable[tuple[str, Task]]) -> None:
        now = time.monotonic()
        added = False
        for kind, task in found:
            self.seq += 1
            self.buffer.append(Change(self.seq, kind, task, now))
            added = True
        self._trim()
        if added:
            for sub in self._subscribers:
                sub.notify()

    def _trim(self, everything: bool = False) -> None:
        horizon = time.monotonic() - self.keep_seconds
        while self.buffer and (
            everything or len(self.buffer) > self.keep or self.buffer[0].seen_at < horizon
        ):
            dropped = self.buffer.popleft()
            self.complete_after = max(self.complete_after, dropped.key)
        if everything:
            self.complete_after = max(self.complete_after, (int(time.time() * 1000), ""))
