"""Handlers used only by tests: each records its side effect in a file, so a test can
count how many times a task really ran, across threads and processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from worker.handlers import handler
from worker.handlers.context import Context


def _record(payload: dict[str, Any], ctx: Context) -> None:
    with open(payload["log"], "a") as f:
        f.write(f"{ctx.task_id} {ctx.attempt} {os.getpid()}\n")


@handler("test-count")
async def count(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Record a run, then sleep ``seconds`` (cancellable)."""
    _record(payload, ctx)
    end = asyncio.get_running_loop().time() + float(payload.get("seconds", 0))
    while asyncio.get_running_loop().time() < end:
        ctx.raise_if_cancelled()
        await asyncio.sleep(0.05)
    return {"attempt": ctx.attempt}


@handler("test-count-sync")
def count_sync(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """``test-count`` as a sync handler (in a thread): record a run, then sleep ``seconds``
    (cancellable)."""
    import time

    _record(payload, ctx)
    end = time.monotonic() + float(payload.get("seconds", 0))
    while time.monotonic() < end:
        ctx.raise_if_cancelled()
        time.sleep(0.05)
    return {"attempt": ctx.attempt}


@handler("test-flaky")
def flaky(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Fail every attempt before ``succeed_on``."""
    _record(payload, ctx)
    if ctx.attempt < int(payload.get("succeed_on", 2)):
        raise ConnectionError(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@handler("test-block")
def block(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A sync handler that sleeps in a thread, ignoring cancel (like real blocking code)."""
    import time

    _record(payload, ctx)
    time.sleep(float(payload.get("seconds", 1)))
    return {"slept": payload.get("seconds", 1)}


@handler("test-thread")
def thread_of(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A sync handler that says which thread ran it (and reports progress if asked)."""
    import threading

    _record(payload, ctx)
    if payload.get("progress"):
        ctx.progress(1.0, "done")
    return {"thread": threading.get_ident()}


def runs(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        task_id, attempt, pid = line.split()
        out.append((task_id, int(attempt), int(pid)))
    return out
