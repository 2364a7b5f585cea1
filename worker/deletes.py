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
from worker.io import wait_for_event

log = logging.getLogger("conveyor.worker")

GATHER_SECONDS = 1.0
BATCH = 10  # SQS DeleteMessageBatch's most


class DeleteBatcher:
    def __init__(
        self, delete_many: Callable[[list[str]], Awaitable[None]], gather_seconds: float = GATHER_SECONDS
    ) -> None:
        self._delete_many = delete_many
        self._gather = gather_seconds
        self._pending: list[str] = []
        self._wakeup = asyncio.Event()
        self._closing = False

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, receipt: str) -> None:
        self._pending.append(receipt)
        self._wakeup.set()

    async def _send(self) -> None:
        batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
        try:
            await self._delete_many(batch)
        except ConveyorError as exc:
            # The task is terminal already; its message coming back is a no-op.
            log.warning("delete of %d message(s) failed: %s", len(batch), exc)

    async def run(self) -> None:
        """Send batches until closed and empty: each pending delete waits at most about
        the gather time for its batch to fill."""
        loop = asyncio.get_running_loop()
        while not (self._closing and not self._pending):
            await self._wakeup.wait()
            while self._pending:
                deadline = loop.time() + self._gather
                while (
                    len(self._pending) < BATCH and not self._closing and (left := deadline - loop.time()) > 0
                ):
                    self._wakeup.clear()
                    await wait_for_event(self._wakeup, left)
                await self._send()
            if not self._closing:
                self._wakeup.clear()

    def closing(self) -> None:
        """Stop gathering: what is pending goes at once."""
        self._closing = True
        self._wakeup.set()

    async def flush(self) -> None:
        while self._pending:
            await self._send()
