"""A handler for the flow-control tests: it records when each attempt started and ended
(wall-clock seconds, comparable across worker processes), so a test can count overlaps
and starts per window."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from worker.handlers import handler
from worker.handlers.context import Context


def _line(path: str, *fields: object) -> None:
    # One short write per line in append mode: lines of several processes never interleave.
    with open(path, "a") as f:
        f.write(" ".join(str(x) for x in fields) + "\n")


@handler("test-span")
async def span(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Record the start, sleep ``seconds``, record the end."""
    _line(payload["log"], "start", ctx.task_id, ctx.attempt, os.getpid(), f"{time.time():.6f}")
    await asyncio.sleep(float(payload.get("seconds", 0)))
    _line(payload["log"], "end", ctx.task_id, ctx.attempt, os.getpid(), f"{time.time():.6f}")
    return {"attempt": ctx.attempt}


def spans(log: Path) -> dict[tuple[str, int], dict[str, float]]:
    """{(task id, attempt): {"start": t, "end": t, "pid": pid}} from a log."""
    out: dict[tuple[str, int], dict[str, float]] = {}
    if not log.exists():
        return out
    for line in log.read_text().splitlines():
        kind, task_id, attempt, pid, at = line.split()
        entry = out.setdefault((task_id, int(attempt)), {})
        entry[kind] = float(at)
        entry["pid"] = float(pid)
    return out


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (one ending as another starts: not both)."""
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1])
    )
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak
