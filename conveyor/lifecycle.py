"""What happens to a task, decided without I/O.

The worker (worker/runtime.py) does the I/O; it asks these functions what to do at each
step and does exactly that. Nothing here reads a clock, a random source or a store: time,
jitter and what the store answered come in as arguments, so every branch is a table test
(tests/worker/test_lifecycle.py).

A delivered message goes through at most four decisions:

    on_delivery        the message and the task's type   -> Claim, or a message action
    on_claim_refused   what the failed claim found        -> Claim again, Run, CheckOwner, ...
    on_owner           the owner's heartbeat record       -> TakeOver, Fail or standby
    after_take_over    whether the take-over won          -> Run or standby

and an attempt that ran goes through two:

    outcome_of         what the handler returned or raised -> Outcome
    on_outcome         the Outcome and the attempt count   -> Requeue or Finish

Message actions (what the worker does with the SQS message):
    Delete    the task is terminal or gone: nothing to do, ever.
    Hide      keep the message, invisible for N s; a standby copy of a running task is
              hidden this way, so it comes back if the owner dies.
    Resend    replace the message with a fresh copy due in N s. Its receive count starts
              again at 0, so waiting (paused type, full slots) never pushes a healthy task
              into the dead-letter queue.
    Fail      record the task failed with this error (if it is not finished), then delete.
    Park      the type is paused or disabled: look at the record, then ``on_parked``.
    SendNotify  the task is finished and its completion webhook still pending: put a
              notify message on the queue, then delete this one.

A notify message (task_type NOTIFY_TYPE, sent when a task with a webhook finishes) is
``Deliver``: the worker reads the record (``on_notify``), POSTs the webhook, and
``after_delivery`` says what to record and whether to try again (the message hidden for
the backoff) or delete it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from conveyor.errors import PermanentError, TaskCancelled
from conveyor.model import NOTIFY_TYPE, Message, NotifyState, Status, Task, TaskError, WorkerInfo
from conveyor.ports import BROKER_MAX_VISIBILITY_SECONDS
from conveyor.registry import TaskType
from conveyor.results import checked_result

ERROR_TEXT_CHARS = 2000

# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """Claim the attempt in the store, conditionally, as a task of ``task_type``."""

    task_type: str


@dataclass(frozen=True)
class Run:
    """This worker owns the attempt: run the handler."""

    task: Task


@dataclass(frozen=True)
class CheckOwner:
    """The task runs under worker ``owner``: read its heartbeat, then ``on_owner``."""

    task: Task
    owner: str


@dataclass(frozen=True)
class TakeOver:
    """The owner is dead and attempts are left: take the task over (a new attempt)."""

    task: Task


@dataclass(frozen=True)
class Delete:
    reason: str


@dataclass(frozen=True)
class Hide:
    seconds: int
    reason: str


@dataclass(frozen=True)
class Resend:
    delay: int
    reason: str


@dataclass(frozen=True)
class Fail:
    error: TaskError


@dataclass(frozen=True)
class Park:
    delay: int


@dataclass(frozen=True)
class SendNotify:
    reason: str


@dataclass(frozen=True)
class Deliver:
    """A notify message: deliver the finished task's completion webhook."""

    task_id: str


Action = Claim | Run | CheckOwner | TakeOver | Delete | Hide | Resend | Fail | Park | SendNotify | Deliver


def hide_until(run_at: datetime, now: datetime) -> Hide:
    """Hide a message that came early until its task is due (plus a little, so it is)."""
    wait = (run_at - now).total_seconds() + 0.5
    return Hide(min(BROKER_MAX_VISIBILITY_SECONDS, math.ceil(wait)), "not due yet")


def standby(visibility_timeout: int) -> Hide:
    return Hide(visibility_timeout, "standby copy of a running task")


# -- a delivered message -------------------------------------------------------------------


def on_delivery(
    message: Message,
    tasktype: TaskType | None,
    *,
    registry_size: int,
    slots_in_use: int,
    hold_seconds: int,
    jitter: float,
) -> Action:
    """The first look at a message: is it ours to claim now?

    ``slots_in_use`` counts this worker's attempts of the type (claimed or being claimed);
    ``jitter`` is uniform in [0, 1) and spreads the re-sends of a saturated type."""
    if not message.task_id:
        return Delete("not a Conveyor task message")
    if message.task_type == NOTIFY_TYPE:
        return Deliver(message.task_id)  # not a run: no type slot, whatever the type's state
    if tasktype is None:
        if registry_size == 0:
            # No registry yet (its ConfigMap not mounted?): failing every task would be wrong.
            return Hide(max(1, hold_seconds), "no task types known yet")
        return Fail(
            TaskError(
                "UnknownTaskType",
                f"task type {message.task_type!r} no longer exists (its TaskType was deleted)",
            )
        )
    if tasktype.paused or not tasktype.runnable:
        return Park(hold_seconds)
    if tasktype.concurrency and slots_in_use >= tasktype.concurrency:
        # Re-sent rather than re-hidden: a long saturation must not add up receives.
        return Resend(1 + int(jitter * 3), "type at its per-worker concurrency")
    return Claim(message.task_type)


def finished(current: Task, reason: str) -> Delete | SendNotify:
    """A terminal task's message: done with, unless its webhook is still pending. Then the
    worker that finished it died before sending the notify message (or the send failed),
    and this message, come back, is the only thing left that knows."""
    if current.notify_state is NotifyState.PENDING:
        return SendNotify(f"{reason}; its webhook is still pending")
    return Delete(reason)


def on_parked(current: Task | None, hold_seconds: int) -> Resend | Delete | SendNotify:
    """A paused or disabled type's message: wait another round unless the task is over."""
    if current is None:
        return Delete("task finished while its type was paused")
    if current.status.terminal:
        return finished(current, "task finished while its type was paused")
    return Resend(hold_seconds, "type paused or disabled")


def on_claim_refused(
    current: Task | None,
    *,
    claimed_as: str,
    worker_id: str,
    in_flight_here: bool,
    now: datetime,
    visibility_timeout: int,
) -> Action:
    """The conditional claim failed; ``current`` is the record as the store has it.

    ``in_flight_here``: this worker runs the task, or has a claim for it in flight."""
    if current is None:
        return Delete("task does not exist")
    if current.status.terminal:
        return finished(current, "task is finished")
    if current.status is Status.QUEUED:
        if current.type != claimed_as:
            return Claim(current.type)  # re-submitted under another type: claim it as that
        if current.run_at is not None and current.run_at > now:
            return hide_until(current.run_at, now)  # delayed or backing off: not an attempt
        return Hide(1, "claim raced another change; look again")
    # Running: under another worker, or this one via a duplicate delivery.
    if current.worker == worker_id:
        if not in_flight_here:
            # Ours, yet not running here: our claim or take-over took effect but its answer
            # was lost and the client's retry then failed the condition. Run it, or nobody will.
            return Run(current)
        return standby(visibility_timeout)
    if current.worker:
        return CheckOwner(current, current.worker)
    return standby(visibility_timeout)


def on_owner(
    current: Task,
    owner: WorkerInfo | None,
    *,
    now: datetime,
    dead_after: float,
    visibility_timeout: int,
) -> TakeOver | Fail | Hide:
    """Decide on a task running under another worker, given that worker's record."""
    alive = owner is not None and (now - owner.last_heartbeat).total_seconds() <= dead_after
    if alive:
        return standby(visibility_timeout)
    if current.attempts >= current.max_attempts:
        return Fail(TaskError("WorkerLost", f"worker {current.worker} stopped during the last attempt"))
    return TakeOver(current)


def after_take_over(taken: Task | None, visibility_timeout: int) -> Run | Hide:
    """Another worker (or the owner, recovered) won the race: keep the copy on standby."""
    return Run(taken) if taken is not None else standby(visibility_timeout)


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


# -- a completion webhook ----------------------------------------------------------------

# Hide the notify message this long after failed attempt n (n = 1..7): 8 attempts over
# about 64 minutes (30 s doubling to 32 min), then the webhook is given up.
NOTIFY_BACKOFF_SECONDS = (30, 60, 120, 240, 480, 960, 1920)
NOTIFY_ATTEMPTS = len(NOTIFY_BACKOFF_SECONDS) + 1


def on_notify(current: Task | None) -> Delete | None:
    """A notify message's record: None to deliver now, else why there is nothing to do."""
    if current is None:
        return Delete("task does not exist")
    if not current.status.terminal:
        return Delete("task is not finished (retried since?)")
    if current.notify_state is not NotifyState.PENDING:
        return Delete("webhook not pending")
    return None


def delivery_attempt(current: Task, msg_id: str) -> int:
    """The number of the attempt about to be made (1 for the first) of webhook ``msg_id``."""
    return 1 + sum(1 for d in current.deliveries if d.webhook_id == msg_id)


@dataclass(frozen=True)
class AfterDelivery:
    """Record ``state`` with the attempt; then ``action`` on the notify message."""

    state: NotifyState
    action: Delete | Hide


def after_delivery(attempt: int, *, ok: bool, retryable: bool, jitter: float) -> AfterDelivery:
    """What attempt ``attempt`` of a webhook (2xx: ``ok``; else ``retryable`` or not) leads to.

    ``jitter`` (uniform in [0, 1)) spreads the retries by +-20 %, so receivers that came
    back after an outage are not hit by every webhook at once."""
    if ok:
        return AfterDelivery(NotifyState.DELIVERED, Delete("webhook delivered"))
    if not retryable:
        return AfterDelivery(NotifyState.UNDELIVERABLE, Delete("webhook cannot be delivered"))
    if attempt >= NOTIFY_ATTEMPTS:
        return AfterDelivery(NotifyState.FAILED, Delete(f"webhook failed {attempt} times; given up"))
    base = NOTIFY_BACKOFF_SECONDS[max(attempt, 1) - 1]
    return AfterDelivery(NotifyState.PENDING, Hide(math.ceil(base * (0.8 + 0.4 * jitter)), "webhook retry"))
