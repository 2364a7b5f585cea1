"""The Conveyor side's no-op handler: reports its start to the harness and returns.

Loaded into the worker through ``CONVEYOR_HANDLER_MODULES=benchmarks.conveyor_handlers``;
its TaskType (``bench-noop``) is written next to the examples by the harness. A sync
handler, like most real ones, so the worker's thread-pool hop is part of what is measured.
"""

from __future__ import annotations

from typing import Any

from benchmarks.events import emit
from worker.handlers import Context, handler

TASKTYPE = """\
apiVersion: conveyor.dev/v1alpha1
kind: TaskType
metadata:
  name: bench-noop
spec:
  handler: bench-noop
  description: Benchmark no-op; reports its start to the harness.
  maxAttempts: 3
  timeoutSeconds: 30
"""


@handler("bench-noop")
def bench_noop(payload: Any, ctx: Context) -> None:
    emit("start", str(payload.get("run", "-")) if isinstance(payload, dict) else "-", ctx.task_id)
    return None
