"""The fault tests' handler: it counts its side effects in a file shared by every worker
process, so a test can tell how often each task really ran and really completed."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from worker.handlers import handler
from worker.handlers.context import Context


def _append(path: str, line: str) -> None:
    # One short O_APPEND write per line: lines from many processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@handler("fault-count")
async def count(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Log ``start``, sleep ``seconds`` (cancellable), log ``done``: the side effect."""
    _append(payload["log"], f"start {ctx.task_id} {ctx.attempt} {os.getpid()}\n")
    end = asyncio.get_running_loop().time() + float(payload.get("seconds", 0))
    while asyncio.get_running_loop().time() < end:
        ctx.raise_if_cancelled()
        await asyncio.sleep(0.02)
    _append(payload["log"], f"done {ctx.task_id} {ctx.attempt} {os.getpid()}\n")
    return {"attempt": ctx.attempt, "pid": os.getpid()}


def side_effects(path: str) -> dict[str, dict[str, list[tuple[int, int]]]]:
    """task id -> {"start"|"done": [(attempt, pid), ...]}."""
    out: dict[str, dict[str, list[tuple[int, int]]]] = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            kind, task_id, attempt, pid = line.split()
            out.setdefault(task_id, {"start": [], "done": []})[kind].append((int(attempt), int(pid)))
    return out
