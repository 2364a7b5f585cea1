"""Housekeeping that must run even when no worker does: the sweeper and the DLQ reaper.

KEDA may scale the workers to zero, and it wakes them only on the main queue's depth. A
task whose SendMessage failed has no message there, and a dead letter is in the other
queue, so neither would ever wake a worker. The API always runs (at least one replica),
so it runs this loop: once the sweeper re-sends a message the main queue is non-empty
and KEDA scales the workers up.

Several API replicas may run it at once. Both steps are safe to repeat and to race: the
sweeper claims each re-send with a conditional write before sending, and the reaper's
receive hides a dead letter from the others, then fails its task only if unfinished.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any

from conveyor.engine import Engine
from conveyor.settings import Settings

log = logging.getLogger("conveyor.maintenance")

MIN_DERIVED_INTERVAL = 5.0


def interval_seconds(settings: Settings) -> float:
    """The configured interval, or a quarter of the sweeper's horizon (at least 5 s), so an
    orphan waits at most about 1.4 horizons."""
    if settings.maintenance_interval_seconds > 0:
        return settings.maintenance_interval_seconds
    return max(MIN_DERIVED_INTERVAL, settings.redispatch_after_seconds / 4)


class Maintenance:
    """Reap, then sweep, every ``interval`` seconds with +-50% jitter (replicas spread out)."""

    def __init__(
        self,
        engine: Engine,
        interval: float | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.interval = interval_seconds(engine.settings) if interval is None else interval
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.rounds = 0

    async def run_once(self) -> tuple[int, int]:
        """One round; returns (messages re-sent, tasks reaped). A failing step is logged and
        does not stop the other: DynamoDB and the DLQ fail independently.

        Reaping comes first: a queued task whose message was dead-lettered is then failed,
        not re-sent for another round of crashes, and no longer counts in the sweeper's
        deficit."""
        sent = reaped = 0
        # boto3 blocks: off the event loop, so requests are served meanwhile.
        try:
            reaped = await asyncio.to_thread(self.engine.reap)
        except Exception as exc:
            log.warning("dead-letter reaper failed: %s", exc)
        try:
            sent = await asyncio.to_thread(self.engine.sweep)
        except Exception as exc:
            log.warning("sweeper failed: %s", exc)
        self.rounds += 1
        return sent, reaped

    async def run(self) -> None:
        """Forever, until cancelled. The first round waits (jittered) too, so replicas
        started together by a rollout spread out."""
        while True:
            await self._sleep(self.interval * (0.5 + self._rng.random()))
            await self.run_once()


@asynccontextmanager
async def running(loop: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``loop`` as a task while the block runs; cancel it and wait for it on the way
    out, so no loop outlives the app (the firing loop uses this too)."""
    task = asyncio.create_task(loop, name=name)
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def background(engine: Engine) -> AsyncIterator[Maintenance | None]:
    """Run the loop as a task while the block runs (when ``maintenance_enabled``)."""
    if not engine.settings.maintenance_enabled:
        yield None
        return
    maintenance = Maintenance(engine)
    log.info("sweeper and dead-letter reaper running every ~%.0fs", maintenance.interval)
    async with running(maintenance.run(), "conveyor-maintenance"):
        yield maintenance
