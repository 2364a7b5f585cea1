"""What a delivered message means, decided without I/O.

A delivered message goes through at most four decisions:

    on_delivery        the message and the task's type   -> Claim, or a message action
    on_claim_refused   what the failed claim found        -> Claim again, Run, CheckOwner, ...
    on_owner           the owner's heartbeat record       -> TakeOver, Fail or standby
    after_take_over    whether the take-over won          -> Run or standby

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
    Deliver   a notify message: deliver the webhook (conveyor/lifecycle/webhooks.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from conveyor.model import NOTIFY_TYPE, Message, NotifyState, Status, Task, TaskCopy, TaskError, WorkerInfo
from conveyor.ports import BROKER_MAX_VISIBILITY_SECONDS
from conveyor.registry import TaskType

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


def claim_copy(message: Message, claimed_as: str, now: datetime) -> TaskCopy | None:
    """The message's copy of its task, when the claim may rest on it: a copy of the type
    being claimed and already due (a copy that is not due is left to the claim by id,
    whose refusal hides the message until the task's time)."""
    copy = message.copy
    if copy is None or copy.task.type != claimed_as:
        return None
    if copy.task.run_at is not None and copy.task.run_at > now:
        return None
    return copy


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
