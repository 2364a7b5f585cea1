"""Small built-in handlers: echo, sleep, fail, and the CloudQueue seed's text-transform."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from conveyor.errors import PermanentError
from worker.handlers import handler
from worker.handlers.context import Context

MAX_SLEEP_SECONDS = 24 * 3600


@handler("echo")
def echo(payload: Any, ctx: Context) -> Any:
    return payload


@handler("sleep")
async def sleep(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Sleeps ``seconds``, checking for cancellation ten times a second."""
    raw = payload.get("seconds", 1)
    # bool is an int to Python; NaN and inf pass float() but no clock can sleep them.
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise PermanentError(f"seconds: must be a number, not {type(raw).__name__}")
    try:
        seconds = float(raw)
    except ValueError as exc:
        raise PermanentError(f"seconds: not a number: {raw!r}") from exc
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise PermanentError(f"seconds: must be a finite number from 0 to {MAX_SLEEP_SECONDS}, not {raw!r}")
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        ctx.raise_if_cancelled()
        await asyncio.sleep(min(0.1, left))
    return {"slept": seconds}


@handler("fail")
def fail(payload: dict[str, Any], ctx: Context) -> None:
    """Always fails: ``permanent: true`` fails at once, otherwise it is retried."""
    message = str(payload.get("message", "failed on purpose"))
    if payload.get("permanent"):
        raise PermanentError(message)
    raise RuntimeError(message)


@handler("text-transform")
def text_transform(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    text = str(payload["text"])
    return {"length": len(text), "uppercase": text.upper(), "word_count": len(text.split())}
