"""What an attempt came to and what to record, decided without I/O.

outcome_of         what the handler returned or raised -> Outcome
on_outcome         the Outcome and the attempt count   -> Requeue or Finish
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from conveyor.errors import PermanentError, TaskCancelled
from conveyor.model import Status, Task, TaskError
from conveyor.registry import TaskType
from conveyor.results import checked_result

ERROR_TEXT_CHARS = 2000

# -- an attempt that ran -------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What an attempt came to. ``status`` None is a retryable failure."""

    status: Status | None
    result: Any = None
    error: TaskError | None = None


def outcome_of(
    raised: BaseException | None,
    result: Any,
    *,
    payload: Any,
    cancelled: bool,
    timeout: float,
) -> Outcome:
    """Classify what the handler did: returned ``result``, or raised ``raised``.

    TimeoutError here means the worker's per-attempt timeout fired. An exception raised
    after a cancel was requested is the handler stopping for it, whatever its type."""
    if raised is None:
        # A result the store or a reader cannot take fails the task for good: running the
        # handler again would return the same.
        value, problem = checked_result(payload, result)
        if problem is not None:
            return Outcome(Status.FAILED, error=problem)
        return Outcome(Status.SUCCEEDED, value)
    if isinstance(raised, TaskCancelled):
        return Outcome(Status.CANCELLED, error=TaskError("Cancelled", str(raised) or "cancelled on request"))
    if isinstance(raised, TimeoutError):
        return Outcome(None, error=TaskError("Timeout", f"attempt exceeded timeoutSeconds={timeout:g}"))
    if isinstance(raised, PermanentError):
        return Outcome(Status.FAILED, error=TaskError(type(raised).__name__, str(raised)))
    if cancelled:
        return Outcome(Status.CANCELLED, error=TaskError("Cancelled", "cancelled on request"))
    name = type(raised).__name__
    return Outcome(None, error=TaskError(name, str(raised)[:ERROR_TEXT_CHARS] or name))


def handler_missing(handler: str) -> Outcome:
    """The TaskType names a handler this worker does not have: retrying here cannot help."""
    return Outcome(
        Status.FAILED, error=TaskError("HandlerNotFound", f"this worker has no handler {handler!r}")
    )


def backoff_ceiling(tasktype: TaskType, attempt: int) -> float:
    return min(tasktype.backoff_max_seconds, tasktype.backoff_initial_seconds * 2 ** max(attempt - 1, 0))


def backoff_seconds(tasktype: TaskType, attempt: int, jitter: float) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): ``jitter`` (uniform
    in [0, 1)) times min(cap, base * 2**(attempt-1)). Jitter spreads a failed burst."""
    return jitter * backoff_ceiling(tasktype, attempt)


@dataclass(frozen=True)
class Requeue:
    """Record a failed attempt and queue the next one at ``run_at``; hide its message
    until then."""

    run_at: datetime
    error: TaskError
    hide: int


@dataclass(frozen=True)
class Finish:
    status: Status
    result: Any = None
    error: TaskError | None = None


def on_outcome(
    task: Task, outcome: Outcome, tasktype: TaskType, *, now: datetime, jitter: float
) -> Requeue | Finish:
    """What to record when the attempt ``task`` (as claimed) ended with ``outcome``."""
    status, error = outcome.status, outcome.error
    if status is None:
        assert error is not None
        if task.attempts < task.max_attempts:
            delay = backoff_seconds(tasktype, task.attempts, jitter)
            return Requeue(now + timedelta(seconds=delay), error, max(1, math.ceil(delay)))
        status = Status.FAILED
    if status is Status.FAILED:
        assert error is not None
        error = TaskError(error.type, f"{error.message} (attempt {task.attempts} of {task.max_attempts})")
    return Finish(status, outcome.result if status is Status.SUCCEEDED else None, error)


# A finish refused whole for its size leaves the task running; re-running the handler would
# be refused again. This is what gets recorded instead, without the result.
RESULT_REFUSED = Finish(
    Status.FAILED,
    error=TaskError(
        "ResultTooLarge", "the store refused the finished record for its size; the result is dropped"
    ),
)
