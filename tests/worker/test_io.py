"""worker/io.py: blocking calls off the event loop, their outcomes handed back."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from conveyor.blocking import BlockingCalls

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def test_results_exceptions_and_the_callers_context_reach_the_caller():
    calls = BlockingCalls(2)

    def boom() -> None:
        raise KeyError("x")

    async def main() -> None:
        VAR.set("caller")
        assert await calls(lambda a, b=0: a + b, 1, b=2) == 3
        assert await calls(VAR.get) == "caller"
        with pytest.raises(KeyError):
            await calls(boom)

    try:
        asyncio.run(main())
    finally:
        calls.shutdown()


def test_a_call_the_caller_gave_up_on_before_it_began_never_runs():
    calls = BlockingCalls(1)
    gate = threading.Event()
    ran: list[str] = []

    async def main() -> None:
        first = calls.start(gate.wait, 5)
        second = calls.start(ran.append, "late")
        second.cancel()
        # The cancel reaches the pool's future on the loop's next turn: until then the
        # first call still holds the only thread, so the second has not begun.
        await asyncio.sleep(0)
        gate.set()
        await first
        await asyncio.sleep(0.05)

    try:
        asyncio.run(main())
    finally:
        calls.shutdown()
    assert ran == []


def test_calls_dropped_at_shutdown_end_their_futures_and_a_new_loop_is_served():
    calls = BlockingCalls(1)
    gate = threading.Event()

    async def main() -> None:
        first = calls.start(gate.wait, 5)
        queued = calls.start(lambda: "never")
        calls.shutdown()  # drops the queued call
        gate.set()
        assert await first is True
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(queued, 2)

    asyncio.run(main())

    again = BlockingCalls(1)

    async def twice() -> str:
        return await again(lambda: "ok")

    try:
        assert asyncio.run(twice()) == "ok" and asyncio.run(twice()) == "ok"
    finally:
        again.shutdown()
