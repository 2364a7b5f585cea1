"""Deletes of finished tasks' messages, ten to a request.

A finished task's message is deleted within GATHER_SECONDS, ten at a time: it stays
hidden meanwhile (the visibility timeout is far longer), and one that comes back anyway
finds its task terminal and is deleted on sight. Batching sets SQS requests per task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from conveyor.errors import ConveyorError
from conveyor.model import Priority
from worker.io import wait_for_event

log = logging.getLogger("conveyor.worker")

GATHER_SECONDS = 1.0
BATCH = 10  # SQS DeleteMessageBatch's most


class DeleteBatcher:
    """Batches per queue: a DeleteMessageBatch names one queue, and each message is deleted
    from the queue it came from (its priority level's)."""

    def __init__(
        self,
        delete_many: Callable[[Priority, list[str]], Awaitable[None]],
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self._delete_many = delete_many
        self._gather = gather_seconds
        self._pending: dict[Priority, list[str]] = {}
        # When each queue's oldest pending receipt came (monotonic): its batch goes once that
        # has waited the gather time, however busy the other queues are.
        self._since: dict[Priority, float] = {}
        self._wakeup = asyncio.Event()
        self._closing = False

    def __len__(self) -> int:
        return sum(len(receipts) for receipts in self._pending.values())

    def add(self, receipt: str, lane: Priority = Priority.NORMAL) -> None:
        self._pending.setdefault(lane, []).append(receipt)
        self._since.setdefault(lane, time.monotonic())
        self._wakeup.set()

    async def _send(self, lane: Priority) -> None:
        receipts = self._pending.pop(lane)
        batch, rest = receipts[:BATCH], receipts[BATCH:]
        since = self._since.pop(lane)
        if rest:  # as old as the batch that went: due at the same time
            self._pending[lane], self._since[lane] = rest, since
        try:
            await self._delete_many(lane, batch)
        except ConveyorError as exc:
            # The task is terminal already; its message coming back is a no-op.
            log.warning("delete of %d message(s) failed: %s", len(batch), exc)

    def _due(self, now: float) -> list[Priority]:
        """The queues whose batch goes now: full, waited the gather time, or closing."""
        return [
            lane
            for lane, since in self._since.items()
            if self._closing or len(self._pending[lane]) >= BATCH or now - since >= self._gather
        ]

    async def run(self) -> None:
        """Send batches until closed and empty: each pending delete waits at most about
        the gather time for its batch to fill."""
        while not (self._closing and not self._pending):
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                now = time.monotonic()
                due = self._due(now)
                if not due:
                    await wait_for_event(self._wakeup, min(self._since.values()) + self._gather - now)
                    self._wakeup.clear()
                for lane in due:
                    await self._send(lane)

    def closing(self) -> None:
        """Stop gathering: what is pending goes at once."""
        self._closing = True
        self._wakeup.set()

    async def flush(self) -> None:
        while self._pending:
            for lane in list(self._pending):
                await self._send(lane)
