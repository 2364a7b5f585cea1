"""What happens to a completion webhook, decided without I/O.

A notify message (task_type NOTIFY_TYPE, sent when a task with a webhook finishes) is
``Deliver``: the worker reads the record (``on_notify``), POSTs the webhook, and
``after_delivery`` says what to record and whether to try again (the message hidden for
the backoff) or delete it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from conveyor.lifecycle.messages import Delete, Hide
from conveyor.model import NotifyState, Task

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
