"""A handler for the registry tests: records when each run starts and ends, so a test can
measure how many ran at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from worker.handlers import handler
from worker.handlers.context import Context


@handler("registry-test-span")
async def span(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    log = Path(payload["log"])
    start = time.monotonic()
    end = start + float(payload.get("seconds", 0))
    while time.monotonic() < end:
        ctx.raise_if_cancelled()
        await asyncio.sleep(0.02)
    with log.open("a") as f:
        f.write(f"{ctx.task_id} {ctx.attempt} {start} {time.monotonic()}\n")
    return {"attempt": ctx.attempt}


def spans(log: Path) -> list[tuple[str, int, float, float]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        task_id, attempt, start, end = line.split()
        out.append((task_id, int(attempt), float(start), float(end)))
    return out


def most_at_once(log: Path) -> int:
    edges = sorted([(s, 1) for _, _, s, _ in spans(log)] + [(e, -1) for _, _, _, e in spans(log)])
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak
