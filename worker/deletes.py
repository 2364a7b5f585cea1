"""Deletes of finished tasks' messages, ten to a request.

A finished task's message is deleted within GATHER_SECONDS, ten at a time: it stays
hidden meanwhile (the visibility timeout is far longer), and one that comes back anyway
finds its task terminal and is deleted on sight. Batching sets SQS requests per task.
"""

from __future__ import annotations

import asyncio
import logging
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
        # Insertion order: the queue whose receipts have waited longest comes first.
        self._pending: dict[Priority, list[str]] = {}
        self._wakeup = asyncio.Event()
        self._closing = False

    def __len__(self) -> int:
        return sum(len(receipts) for receipts in self._pending.values())

    def add(self, receipt: str, lane: Priority = Priority.NORMAL) -> None:
        self._pending.setdefault(lane, []).append(receipt)
        self._wakeup.set()

    def _full(self) -> bool:
        return any(len(receipts) >= BATCH for receipts in self._pending.values())

    async def _send(self, lane: Priority) -> None:
        receipts = self._pending.pop(lane)
        batch, rest = receipts[:BATCH], receipts[BATCH:]
        if rest:
            self._pending[lane] = rest
        try:
            await self._delete_many(lane, batch)
        except ConveyorError as exc:
            # The task is terminal already; its message coming back is a no-op.
            log.warning("delete of %d message(s) failed: %s", len(batch), exc)

    async def _send_due(self, everything: bool) -> None:
        """The full batches; with ``everything`` (the gather time is up, or closing), one
        batch of every queue."""
        for lane in list(self._pending):
            if lane in self._pending and (everything or len(self._pending[lane]) >= BATCH):
                await self._send(lane)

    async def run(self) -> None:
        """Send batches until closed and empty: each pending delete waits at most about
        the gather time for its batch to fill."""
        loop = asyncio.get_running_loop()
        while not (self._closing and not self._pending):
            await self._wakeup.wait()
            while self._pending:
                deadline = loop.time() + self._gather
                while not self._full() and not self._closing and (left := deadline - loop.time()) > 0:
                    self._wakeup.clear()
                    await wait_for_event(self._wakeup, left)
                await self._send_due(everything=not self._full())
            if not self._closing:
                self._wakeup.clear()

    def closing(self) -> None:
        """Stop gathering: what is pending goes at once."""
        self._closing = True
        self._wakeup.set()

    async def flush(self) -> None:
        while self._pending:
            await self._send_due(everything=True)
