"""Blocking work (the AWS calls) off the event loop, on the API's own threads.

``loop.run_in_executor`` over one thread pool, not Starlette's ``run_in_threadpool``: the
latter goes through anyio (a cancel scope, a capacity limiter, a worker-thread queue), which
costs a submit measurably more CPU for the same hop (docs/BENCHMARKS.md). The context is
copied, as anyio copies it, so a request's trace context reaches the AWS calls.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

R = TypeVar("R")

# anyio's default for Starlette's thread pool, which this replaces on the submit path.
THREADS = 40
_pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="conveyor-api")


async def run_blocking(func: Callable[..., R], *args: Any) -> R:
    """``func(*args)`` on a pool thread, in a copy of the caller's context."""
    call = functools.partial(contextvars.copy_context().run, func, *args)
    return await asyncio.get_running_loop().run_in_executor(_pool, call)
