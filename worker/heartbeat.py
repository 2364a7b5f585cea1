"""The worker's heartbeat: every interval it extends the visibility of the running
attempts' messages (so none is redelivered under its handler) and the leases of their
fleet-wide concurrency slots, records the worker as alive, and hands the cancels
requested for its tasks to their handlers."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta

from conveyor import __version__
from conveyor.blocking import BlockingCalls
from conveyor.engine import Engine
from conveyor.model import Priority, WorkerInfo
from worker.attempt import Attempts

log = logging.getLogger("conveyor.worker")

# The worker record outlives its last beat by this long in the store, then expires.
RECORD_TTL_SECONDS = 3600


class Heartbeat:
    def __init__(
        self,
        engine: Engine,
        io: BlockingCalls,
        attempts: Attempts,
        worker_id: str,
        host: str,
        concurrency: int,
    ) -> None:
        self.engine, self.io, self.attempts = engine, io, attempts
        self.id, self.host, self.concurrency = worker_id, host, concurrency
        self.started_at = engine.clock.now()

    async def beat(self) -> None:
        info = WorkerInfo(
            id=self.id,
            host=self.host,
            pid=os.getpid(),
            started_at=self.started_at,
            last_heartbeat=self.engine.clock.now(),
            in_flight=len(self.attempts.running),
            concurrency=self.concurrency,
            version=__version__,
        )
        for task_id in await self.io(self.engine.workers.heartbeat, info, RECORD_TTL_SECONDS):
            self.attempts.cancel(task_id)

    async def renew(self) -> None:
        """Move the running tasks' fleet-wide slots on by one lease (worker_dead_after): a
        worker that stops beating loses them within that."""
        limits = self.engine.limits
        running = list(self.attempts.running.values())
        leases = [lease for r in running for lease in r.leases]
        if not leases or limits is None:
            return
        until = self.engine.clock.now() + timedelta(seconds=self.engine.settings.worker_dead_after)
        lost = set(await self.io(limits.renew_slots, leases, self.id, until))
        for lease in lost:
            # Its lease ran out before this beat (a long stall) and the slot went to another.
            log.warning("task %s lost its concurrency slot (its lease expired)", lease.task_id)
        if lost:  # not renewed again: the slot is another task's now
            for r in running:
                r.leases = tuple(lease for lease in r.leases if lease not in lost)

    async def run(self) -> None:
        settings = self.engine.settings
        while True:
            await asyncio.sleep(settings.heartbeat_interval)
            try:
                timeout = settings.visibility_timeout
                # Each message's visibility is its own queue's: one batch per level.
                extend: dict[Priority, list[tuple[str, int]]] = {}
                for r in self.attempts.running.values():
                    extend.setdefault(r.message.lane, []).append((r.message.receipt, timeout))
                for lane, items in extend.items():
                    await self.io(self.engine.lane(lane).change_visibility_many, items)
                await self.renew()
                await self.beat()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    async def stop(self) -> None:
        """Deregister: the worker leaves the live list at once, not when its beat ages out."""
        await self.io(self.engine.workers.remove_worker, self.id)
