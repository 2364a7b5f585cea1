"""Blocking calls (boto3 under the adapters) off the event loop, on a pool of their own so
handlers in threads can never starve them."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
Loop = asyncio.AbstractEventLoop
_Outcome = tuple[asyncio.Future[Any], BaseException | None, Any]


class BlockingCalls:
    """Each call runs on the pool and its outcome is handed back to the event loop.

    Hand-backs are coalesced: a call that ends while an earlier hand-back is still waiting
    for the loop joins it, so calls that end together wake the loop once. (Each wake-up is a
    write to the loop's self-pipe and a read back: a system call pair per call, which
    ``run_in_executor`` pays for every call.) The first completion schedules its wake-up at
    once, so no outcome waits for another.
    """

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="conveyor-io")
        self._lock = threading.Lock()
        # Outcomes waiting for a wake-up already scheduled on their loop (keyed by loop, so
        # a loop closed with one pending never holds back the calls of the next).
        self._pending: dict[Loop, list[_Outcome]] = {}

    async def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.start(fn, *args, **kwargs)

    def start(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """The call as a future, for a caller that may stop waiting for it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        # In a copy of the caller's context, as asyncio.to_thread does: an attempt's store and
        # queue calls are traced inside its span.
        context = contextvars.copy_context()

        def run() -> None:
            if future.cancelled():  # the caller stopped waiting before the call began
                return
            try:
                result = context.run(fn, *args, **kwargs)
            except BaseException as exc:  # handed to the awaiting caller, as run_in_executor does
                self._hand_back(loop, future, exc, None)
            else:
                self._hand_back(loop, future, None, result)

        job = self._pool.submit(run)
        # A call the pool drops unrun (shutdown with cancel_futures) still ends its future.
        job.add_done_callback(lambda job: self._dropped(loop, future, job))
        return future

    def _dropped(self, loop: Loop, future: asyncio.Future[Any], job: Future[None]) -> None:
        if job.cancelled():
            self._hand_back(loop, future, asyncio.CancelledError(), None)

    def _hand_back(
        self, loop: Loop, future: asyncio.Future[Any], exc: BaseException | None, result: Any
    ) -> None:
        with self._lock:
            waiting = self._pending.get(loop)
            if waiting is not None:
                waiting.append((future, exc, result))
                return
            self._pending[loop] = [(future, exc, result)]
        try:
            loop.call_soon_threadsafe(self._deliver, loop)
        except RuntimeError:  # the loop is closed: nobody is left to wait
            with self._lock:
                self._pending.pop(loop, None)

    def _deliver(self, loop: Loop) -> None:
        with self._lock:
            ready = self._pending.pop(loop, [])
        for future, exc, result in ready:
            if future.cancelled():
                continue
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            elif exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait at most ``seconds`` for ``event``; True if it was set. Through asyncio.timeout,
    not wait_for: on Python 3.11 wait_for can swallow a cancel that lands just as the event
    fires, and the cancelled loop then waits on forever."""
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return False
    return True
