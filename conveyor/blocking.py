"""Blocking calls (boto3 under the adapters) off the event loop, on a thread pool of their
own, each in a copy of the caller's context (as ``asyncio.to_thread`` runs them): the API's
submit and the worker's store and queue calls go through one of these."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class BlockingCalls:
    def __init__(self, threads: int, name: str = "conveyor-io") -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)

    async def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.start(fn, *args, **kwargs)

    def start(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[T]:
        """The call as a future, for a caller that may stop waiting for it."""
        # In a copy of the caller's context, as asyncio.to_thread does: an attempt's store and
        # queue calls are traced inside its span.
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return asyncio.get_running_loop().run_in_executor(self._pool, call)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
