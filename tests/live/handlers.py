"""Handlers used by the live tests: they report progress and events."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from worker.handlers import handler
from worker.handlers.context import Context


@handler("live-steps")
def steps(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Sync (runs in a thread): report progress in a tight loop for ``seconds``, and an
    event every ``every`` calls; then finish with fraction 1."""
    end = time.monotonic() + float(payload.get("seconds", 0.5))
    calls = 0
    while time.monotonic() < end:
        calls += 1
        ctx.progress(min(calls / 1e6, 0.99), f"call {calls}")
        if calls % int(payload.get("every", 10**9)) == 0:
            ctx.event("tick", {"calls": calls})
    ctx.event("done", {"calls": calls})
    ctx.progress(1.0, "all done")
    return {"calls": calls}


@handler("live-async")
async def stepped(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Async (on the worker's loop): ``n`` steps of ``pause`` seconds, one event each."""
    n = int(payload.get("n", 3))
    for i in range(1, n + 1):
        await asyncio.sleep(float(payload.get("pause", 0.05)))
        ctx.event("step", {"i": i})
        ctx.progress(i / n, f"step {i} of {n}")
    return {"steps": n}


@handler("live-gate")
def gate(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Report progress whenever the file ``path`` holds a new number, until it holds
    "done" (a test drives the handler from outside, across processes too)."""
    from pathlib import Path

    path = Path(payload["path"])
    seen = ""
    while True:
        ctx.raise_if_cancelled()
        text = path.read_text().strip() if path.exists() else ""
        if text == "done":
            return {"ok": True}
        if text and text != seen:
            seen = text
            ctx.progress(float(text), f"at {text}")
        time.sleep(0.01)


@handler("live-markup")
def markup(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Reports text that rich would read as markup, to show it is printed as is."""
    ctx.event("odd", {"text": "[/bold] [red]x"})
    ctx.progress(0.5, "[/]")
    return {}
