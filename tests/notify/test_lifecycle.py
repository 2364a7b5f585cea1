"""The completion webhook's decisions (conveyor.lifecycle), table-tested without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conveyor import lifecycle as lc
from conveyor.model import NOTIFY_TYPE, Delivery, Message, NotifyState, Status, Task
from conveyor.registry import TaskType

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def task(**kw: object) -> Task:
    base = {
        "id": "01J0000000000000000000000A",
        "type": "echo",
        "payload": {},
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Task(**(base | kw))  # type: ignore[arg-type]


DONE = task(status=Status.SUCCEEDED, finished_at=NOW, attempts=1)


@pytest.mark.parametrize("tasktype", [None, TaskType("echo", "echo", paused=True), TaskType("echo", "echo")])
def test_a_notify_message_is_delivered_whatever_its_task_types_state(tasktype):
    # Not claimed, not parked, never failed as an unknown type: it only carries an id.
    message = Message(DONE.id, NOTIFY_TYPE, "r")
    action = lc.on_delivery(message, tasktype, registry_size=3, slots_in_use=99, hold_seconds=30, jitter=0.5)
    assert action == lc.Deliver(DONE.id)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (None, lc.Delete),
        (NotifyState.PENDING, lc.SendNotify),
        (NotifyState.DELIVERED, lc.Delete),
        (NotifyState.FAILED, lc.Delete),
        (NotifyState.UNDELIVERABLE, lc.Delete),
    ],
)
def test_a_finished_tasks_message_sends_the_notify_message_only_while_it_is_pending(state, expected):
    current = DONE.with_(notify_state=state)
    refused = lc.on_claim_refused(
        current, claimed_as="echo", worker_id="w", in_flight_here=False, now=NOW, visibility_timeout=30
    )
    assert isinstance(refused, expected)
    assert isinstance(lc.on_parked(current, 30), expected)


@pytest.mark.parametrize(
    ("current", "deliver"),
    [
        (None, False),
        (task(status=Status.QUEUED, notify_state=None), False),  # retried since it finished
        (task(status=Status.RUNNING), False),
        (DONE.with_(notify_state=NotifyState.PENDING), True),
        (DONE.with_(notify_state=NotifyState.DELIVERED), False),
        (DONE.with_(notify_state=NotifyState.FAILED), False),
        (DONE.with_(notify_state=NotifyState.UNDELIVERABLE), False),
    ],
)
def test_on_notify_delivers_only_a_pending_webhook_of_a_finished_task(current, deliver):
    decision = lc.on_notify(current)
    assert (decision is None) is deliver
    if not deliver:
        assert isinstance(decision, lc.Delete)


def test_the_attempt_number_counts_only_this_notifications_attempts():
    old = Delivery(NOW, "an-earlier-finish", 500, 1)
    mine = Delivery(NOW, "this", 500, 1)
    assert lc.delivery_attempt(DONE.with_(deliveries=(old, old)), "this") == 1
    assert lc.delivery_attempt(DONE.with_(deliveries=(old, mine, mine)), "this") == 3


@pytest.mark.parametrize(
    ("attempt", "ok", "retryable", "state", "hide"),
    [
        (1, True, True, NotifyState.DELIVERED, None),
        (8, True, True, NotifyState.DELIVERED, None),
        (1, False, False, NotifyState.UNDELIVERABLE, None),
        (1, False, True, NotifyState.PENDING, 30),
        (2, False, True, NotifyState.PENDING, 60),
        (7, False, True, NotifyState.PENDING, 1920),
        (8, False, True, NotifyState.FAILED, None),
        (9, False, True, NotifyState.FAILED, None),
    ],
)
def test_after_delivery(attempt, ok, retryable, state, hide):
    decision = lc.after_delivery(attempt, ok=ok, retryable=retryable, jitter=0.5)
    assert decision.state is state
    if hide is None:
        assert isinstance(decision.action, lc.Delete)
    else:
        assert decision.action == lc.Hide(hide, "webhook retry")


def test_retries_are_jittered_within_twenty_percent_and_span_about_an_hour():
    low = [lc.after_delivery(n, ok=False, retryable=True, jitter=0.0).action for n in range(1, 8)]
    high = [lc.after_delivery(n, ok=False, retryable=True, jitter=0.999).action for n in range(1, 8)]
    assert all(isinstance(a, lc.Hide) for a in low + high)
    base = sum(lc.NOTIFY_BACKOFF_SECONDS)
    assert 3600 <= base <= 4000 and lc.NOTIFY_ATTEMPTS == 8
    assert sum(a.seconds for a in low) >= 0.8 * base  # type: ignore[union-attr]
    assert sum(a.seconds for a in high) <= 1.2 * base + 7  # type: ignore[union-attr]
    # Every wait stays under what a broker can hide a message for.
    assert max(a.seconds for a in high) < 12 * 3600  # type: ignore[union-attr]
