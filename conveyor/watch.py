"""One watcher per API process: the task ids its clients wait on, read in batches.

However many clients follow tasks (``?wait=``, the event streams), the process reads the
store once per ``interval`` for all the ids they watch together, through
``TaskStore.get_many`` (100 ids a call), and wakes each subscriber of a task that moved.
The store's reads grow with the number of distinct tasks watched, never with the number
of clients. Nothing is read while nobody watches: the poll loop starts with the first
subscriber and ends with the last.

A subscriber holds only the newest snapshot, never a queue, so a slow client costs no
memory: it catches up on the latest state when it reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from conveyor.model import Task
from conveyor.ports import TaskStore

log = logging.getLogger("conveyor.watch")

INTERVAL_SECONDS = 0.5
# Clients one process follows tasks for at most (each is a coroutine and a connection);
# beyond it a new one is refused with 503 and Retry-After, to go to another replica.
MAX_SUBSCRIBERS = 5000


def version(task: Task) -> tuple[Any, ...]:
    """What orders two reads of one task: state changes move ``updated_at``; progress and
    events move their own stamps. A read older than one already seen is ignored (the
    batched reads are eventually consistent)."""
    return (
        task.updated_at,
        task.events[-1].seq if task.events else 0,
        task.progress.at if task.progress else None,
    )


def newer(task: Task, than: Task | None) -> bool:
    """Whether ``task`` is a later read of the record than ``than``."""
    if than is None:
        return True
    a, b = version(task), version(than)
    if a[0] != b[0]:
        return a[0] > b[0]  # a state change (a retry may clear progress: still newer)
    progressed = b[2] is None or (a[2] is not None and a[2] >= b[2])
    return a[1] >= b[1] and progressed and a != b


class Subscription:
    def __init__(self, watcher: TaskWatcher, task_id: str) -> None:
        self.watcher, self.task_id = watcher, task_id
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()

    @property
    def latest(self) -> Task | None:
        return self.watcher.latest.get(self.task_id)

    async def changed(self, timeout: float | None = None) -> Task | None:
        """Wait for a newer snapshot (at most ``timeout`` s); the newest known."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()
        return self.latest


class TaskWatcher:
    def __init__(
        self,
        store: TaskStore,
        interval: float = INTERVAL_SECONDS,
        run_blocking: Callable[..., Any] | None = None,
        max_subscribers: int = MAX_SUBSCRIBERS,
    ) -> None:
        self.store, self.interval, self.max_subscribers = store, interval, max_subscribers
        self.latest: dict[str, Task] = {}
        self._subscribers: dict[str, set[Subscription]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._run_blocking = run_blocking or asyncio.to_thread
        self.reads = 0  # get_many calls: what the watcher costs the store

    @property
    def watched(self) -> int:
        return len(self._subscribers)

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    @property
    def full(self) -> bool:
        return self.subscribers >= self.max_subscribers

    @contextlib.asynccontextmanager
    async def subscribe(self, task: Task) -> AsyncIterator[Subscription]:
        """Follow ``task`` (as the caller just read it) until the block ends."""
        sub = Subscription(self, task.id)
        known = self.latest.get(task.id)
        if newer(task, known):
            self.latest[task.id] = task
        self._subscribers.setdefault(task.id, set()).add(sub)
        self._ensure_running()
        try:
            yield sub
        finally:
            subs = self._subscribers.get(task.id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[task.id]
                    self.latest.pop(task.id, None)

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        running = self._loop_task
        if running is None or running.done() or running.get_loop() is not loop:
            self._loop_task = loop.create_task(self._run(), name="conveyor-task-watcher")

    async def _run(self) -> None:
        while self._subscribers:
            await asyncio.sleep(self.interval)
            ids = list(self._subscribers)
            if not ids:
                break
            try:
                self.reads += 1
                found: dict[str, Task] = await self._run_blocking(self.store.get_many, ids)
            except Exception as exc:  # a store outage: keep the clients, try again next time
                log.warning("task watcher: reading %d task(s) failed: %s", len(ids), exc)
                continue
            self.poll_done(ids, found)

    def poll_done(self, ids: list[str], found: dict[str, Task]) -> None:
        for task_id in ids:
            # A task not found is skipped: an eventually consistent read may miss a record
            # just written, and a record expires only once finished, when streams have closed.
            task = found.get(task_id)
            if task is not None and newer(task, self.latest.get(task_id)):
                self.latest[task_id] = task
                self._wake(task_id)

    def _wake(self, task_id: str) -> None:
        for sub in self._subscribers.get(task_id, ()):
            sub.notify()
