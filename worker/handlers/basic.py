"""Small built-in handlers: echo, sleep, fail, and the CloudQueue seed's text-transform."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor.errors import PermanentError
from worker.handlers import handler
from worker.handlers.context import Context


@handler("echo")
def echo(payload: Any, ctx: Context) -> Any:
    return payload


@handler("sleep")
async def sleep(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Sleeps ``seconds``, checking for cancellation ten times a second."""
    seconds = float(payload.get("seconds", 1))
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
