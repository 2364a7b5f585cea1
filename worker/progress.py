"""A handler's progress and events, written to the task record without flooding the store.

``ctx.progress()`` and ``ctx.event()`` only update this reporter's memory (from any thread:
sync handlers run in a pool). A flusher on the worker's loop writes what changed: at once
the first time, then at most one write per ``WRITE_INTERVAL_SECONDS`` per task however
often the handler reports, and once more when the handler returns, so the last value is
always stored before the attempt's outcome. Each write is conditional on this attempt
still owning the task (``TaskStore.record_progress``); once it is not, nothing more is
written. Reporting is best effort: a failed write never fails the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.clock import Clock
from conveyor.model import MAX_EVENTS, Progress, Task, TaskEvent
from conveyor.ports import TaskStore

log = logging.getLogger("conveyor.worker")

# At most one progress write per task per this many seconds (plus the final one).
WRITE_INTERVAL_SECONDS = 1.0

Io = Callable[..., Awaitable[Any]]


class Reporter:
    def __init__(
        self, store: TaskStore, task: Task, clock: Clock, interval: float = WRITE_INTERVAL_SECONDS
    ) -> None:
        self.store, self.task, self.clock, self.interval = store, task, clock, interval
        self._lock = threading.Lock()
        # Carried over from earlier attempts (the claimed record): events are a history.
        self._progress: Progress | None = task.progress
        self._events: list[TaskEvent] = list(task.events)
        self._seq = task.events[-1].seq if task.events else 0
        self._dirty = False
        self._closed = False
        self._wake: Callable[[], None] = lambda: None
        self._flusher: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()  # one write at a time, in order
        self.writes = 0
        self.owned = True

    # -- called by the handler (any thread) ------------------------------------------------

    def progress(self, fraction: float, message: str | None = None) -> None:
        value = Progress.checked(fraction, message, self.task.attempts, self.clock.now())
        with self._lock:
            self._progress = value
            self._changed()

    def event(self, name: str, data: Any = None) -> None:
        with self._lock:
            value = TaskEvent.checked(self._seq + 1, name, data, self.task.attempts, self.clock.now())
            self._seq = value.seq
            self._events = [*self._events, value][-MAX_EVENTS:]
            self._changed()

    def _changed(self) -> None:
        if self._closed:
            return  # the attempt is over (e.g. a timed-out thread still running): dropped
        self._dirty = True
        self._wake()

    # -- the worker's side ----------------------------------------------------------------

    def start(self, io: Io, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Arm the flusher on ``loop`` (the running one if not given: from another thread,
        pass it); ``io`` runs a blocking call off it. The flusher task itself starts at the
        first report: most handlers never report, and their attempts then cost the loop
        nothing here."""
        loop = loop or asyncio.get_running_loop()
        wake = asyncio.Event()

        async def flusher() -> None:
            while True:
                await wake.wait()
                wake.clear()
                await self.flush(io)
                await asyncio.sleep(self.interval)  # the throttle

        def kick() -> None:
            if self._closed:
                return  # close writes what is left
            if self._flusher is None:
                self._flusher = asyncio.create_task(flusher(), name=f"progress-{self.task.id}")
            wake.set()

        def poke() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(kick)

        self._wake = poke

    def close_quiet(self) -> bool:
        """Close it from any thread if nothing was ever reported; True if so. Otherwise it
        stays open, for ``close`` on the loop to write what is left."""
        with self._lock:
            if self._dirty or self._flusher is not None or self._closed:
                return False
            self._closed = True
            return True

    async def close(self, io: Io) -> None:
        """Stop the flusher and write what is left: the last value is always stored."""
        with self._lock:
            self._closed = True
        # A write in flight finishes first: cancelling its await would not stop the call
        # in its thread, and an earlier value could then land after the last one.
        async with self._writing:
            if self._flusher is not None:
                self._flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flusher
            await self._write(io)

    async def flush(self, io: Io) -> None:
        async with self._writing:
            await self._write(io)

    async def _write(self, io: Io) -> None:
        with self._lock:
            if not self._dirty or not self.owned:
                return
            self._dirty = False
            progress, events = self._progress, tuple(self._events)
        try:
            self.writes += 1
            if not await io(self.store.record_progress, self.task, progress, events):
                self.owned = False
                log.info("task %s: progress not recorded, this attempt no longer owns it", self.task.id)
        except Exception as exc:  # best effort: reporting never fails the attempt
            log.warning("task %s: progress not recorded (%s); next time", self.task.id, exc)
            with self._lock:
                self._dirty = True
