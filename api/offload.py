"""Blocking work (the AWS calls) off the event loop, on the API's own threads.

Through ``conveyor.blocking.BlockingCalls`` (``loop.run_in_executor`` in a copy of the
request's context, so its trace context reaches the AWS calls), not Starlette's
``run_in_threadpool``: that goes through anyio (a cancel scope, a capacity limiter, a
worker-thread queue), which costs a submit measurably more CPU for the same hop
(docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from conveyor.blocking import BlockingCalls

R = TypeVar("R")

# anyio's default for Starlette's thread pool, which this replaces on the submit path.
THREADS = 40
_calls = BlockingCalls(THREADS, name="conveyor-api")


async def run_blocking(func: Callable[..., R], *args: Any) -> R:
    """``func(*args)`` on a pool thread, in a copy of the caller's context."""
    return await _calls.start(func, *args)
