"""The worker's waits. Its blocking calls go through ``conveyor.blocking.BlockingCalls``, on a
pool of their own so handlers in threads can never starve them."""

from __future__ import annotations

import asyncio


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
