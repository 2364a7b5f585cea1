"""One firing loop in its own process, for tests/schedules/test_processes.py.

The production loop (conveyor.scheduler.Scheduler.run) over the real AWS adapters, with
one change: its clock runs ``SCALE`` times faster from a shared origin, so minutes pass
in seconds and every process agrees on the time. With ``DIE_AT`` set, the process kills
itself with SIGKILL right after it submitted that slot's task and before it records it:
the worst moment to die.

The shared origin comes on stdin once the process says ``ready`` (its imports and clients
built): a fixed head start would be either wasted or, on a loaded machine, too short, so
the first slots would pass before a process could look.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from conveyor.bootstrap import build
from conveyor.model import from_rfc3339
from conveyor.schedule_source import ScheduleWatcher
from conveyor.scheduler import Scheduler


def main() -> None:
    duration = float(os.environ["FIRE_LOOP_REAL_SECONDS"])
    fake_start = from_rfc3339(os.environ["FIRE_LOOP_FAKE_START"])
    scale = float(os.environ["FIRE_LOOP_SCALE"])
    interval = float(os.environ["FIRE_LOOP_INTERVAL"])
    die_at = from_rfc3339(os.environ.get("FIRE_LOOP_DIE_AT"))
    assert fake_start is not None

    real_start = 0.0

    def clock() -> datetime:
        return fake_start + timedelta(seconds=(time.time() - real_start) * scale)

    runtime = build()
    store = runtime.engine.store
    if die_at is not None:
        real = store.advance_schedule

        def advance(key: str, slot: datetime, task_id: str | None = None, run_at: Any = None) -> bool:
            if task_id is not None and slot >= die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(key, slot, task_id, run_at)

        store.advance_schedule = advance  # type: ignore[method-assign]
    firing = Scheduler(
        runtime.engine, ScheduleWatcher(runtime.settings.tasktypes).current, clock=clock, interval=interval
    )
    print("ready", flush=True)
    real_start = float(sys.stdin.readline())
    real_end = real_start + duration
    time.sleep(max(0.0, real_start - time.time()))

    async def run() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(firing.run(), timeout=max(0.1, real_end - time.time()))

    asyncio.run(run())
    print(f"ticks={firing.ticks}", flush=True)


if __name__ == "__main__":
    main()
