"""Every decision branch of conveyor.lifecycle, as tables: no I/O, no clock, no sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conveyor import lifecycle as lc
from conveyor.errors import PermanentError, TaskCancelled
from conveyor.model import Message, Status, Task, TaskError, WorkerInfo, decode_message, encode_message
from conveyor.ports import BROKER_MAX_VISIBILITY_SECONDS
from conveyor.registry import TaskType

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ME, OTHER = "worker-me", "worker-other"
VT = 30  # visibility timeout
TYPE = TaskType(name="resize", handler="image-resize", max_attempts=3, concurrency=2)


def msg(task_id: str = "t1", task_type: str = "resize") -> Message:
    return Message(task_id, task_type, "receipt-1")


def task(**kw: Any) -> Task:
    # Fixed times: two tasks built for one row of a table must compare equal.
    base: dict[str, Any] = {
        "id": "t1",
        "type": "resize",
        "payload": {},
        "max_attempts": 3,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Task(**(base | kw))


def alive(seconds_ago: float) -> WorkerInfo:
    at = NOW - timedelta(seconds=seconds_ago)
    return WorkerInfo(OTHER, "host", 1, at, at, 1, 4, "0")


# -- on_delivery ----------------------------------------------------------------------------

DELIVERY = [
    # (case, message, tasktype, registry size, slots in use, expected)
    ("not a task message", msg(task_id=""), TYPE, 3, 0, lc.Delete("not a Conveyor task message")),
    ("registry still empty: wait", msg(), None, 0, 0, lc.Hide(30, "no task types known yet")),
    ("type deleted: fail", msg(), None, 3, 0, lc.Fail),
    ("paused", msg(), TaskType(name="resize", handler="h", paused=True), 3, 0, lc.Park(30)),
    ("disabled", msg(), TaskType(name="resize", handler="h", enabled=False), 3, 0, lc.Park(30)),
    ("not ready", msg(), TaskType(name="resize", handler="h", ready=False), 3, 0, lc.Park(30)),
    ("slots full: resend, jittered", msg(), TYPE, 3, 2, lc.Resend(2, "type at its per-worker concurrency")),
    ("a slot free", msg(), TYPE, 3, 1, lc.Claim("resize")),
    ("no per-worker limit", msg(), TaskType(name="resize", handler="h"), 3, 99, lc.Claim("resize")),
]


@pytest.mark.parametrize(("case", "message", "tasktype", "size", "in_use", "expected"), DELIVERY)
def test_on_delivery(case, message, tasktype, size, in_use, expected):
    got = lc.on_delivery(
        message, tasktype, registry_size=size, slots_in_use=in_use, hold_seconds=30, jitter=0.5
    )
    if isinstance(expected, type):
        assert isinstance(got, expected), case
        assert isinstance(got, lc.Fail) and got.error.type == "UnknownTaskType"
    else:
        assert got == expected, case


def test_a_saturated_type_resends_between_one_and_three_seconds():
    delays = {
        lc.on_delivery(msg(), TYPE, registry_size=1, slots_in_use=2, hold_seconds=30, jitter=j).delay  # type: ignore[union-attr]
        for j in (0.0, 0.34, 0.67, 0.999)
    }
    assert delays == {1, 2, 3}


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (None, lc.Delete("task finished while its type was paused")),
        (task(status=Status.CANCELLED), lc.Delete("task finished while its type was paused")),
        (task(), lc.Resend(30, "type paused or disabled")),
        (task(status=Status.RUNNING), lc.Resend(30, "type paused or disabled")),
    ],
)
def test_on_parked(current, expected):
    assert lc.on_parked(current, 30) == expected


# -- on_claim_refused -------------------------------------------------------------------------

due_later = NOW + timedelta(seconds=100)
REFUSED = [
    ("task gone", None, False, lc.Delete("task does not exist")),
    ("task finished", task(status=Status.SUCCEEDED), False, lc.Delete("task is finished")),
    ("retyped: claim as its type", task(type="thumbnail"), False, lc.Claim("thumbnail")),
    ("delayed: hide until due", task(run_at=due_later), False, lc.Hide(101, "not due yet")),
    (
        "due, claim raced",
        task(run_at=NOW - timedelta(seconds=1)),
        False,
        lc.Hide(1, "claim raced another change; look again"),
    ),
    (
        "ours, answer lost: run it",
        task(status=Status.RUNNING, worker=ME, attempts=1),
        False,
        lc.Run(task(status=Status.RUNNING, worker=ME, attempts=1)),
    ),
    ("ours and running here: duplicate", task(status=Status.RUNNING, worker=ME), True, lc.standby(VT)),
    (
        "another worker's: check it",
        task(status=Status.RUNNING, worker=OTHER),
        False,
        lc.CheckOwner(task(status=Status.RUNNING, worker=OTHER), OTHER),
    ),
    ("running, owner unknown", task(status=Status.RUNNING, worker=None), False, lc.standby(VT)),
]


@pytest.mark.parametrize(("case", "current", "here", "expected"), REFUSED)
def test_on_claim_refused(case, current, here, expected):
    got = lc.on_claim_refused(
        current, claimed_as="resize", worker_id=ME, in_flight_here=here, now=NOW, visibility_timeout=VT
    )
    assert got == expected, case


def test_an_early_message_is_hidden_at_most_as_long_as_the_broker_allows():
    far = task(run_at=NOW + timedelta(days=3))
    got = lc.on_claim_refused(
        far, claimed_as="resize", worker_id=ME, in_flight_here=False, now=NOW, visibility_timeout=VT
    )
    assert got == lc.Hide(BROKER_MAX_VISIBILITY_SECONDS, "not due yet")


def test_a_reclaim_under_the_new_type_is_not_repeated_once_claimed_as_it():
    retyped = task(type="thumbnail")
    got = lc.on_claim_refused(
        retyped, claimed_as="thumbnail", worker_id=ME, in_flight_here=False, now=NOW, visibility_timeout=VT
    )
    assert got == lc.Hide(1, "claim raced another change; look again")


# -- on_owner, after_take_over --------------------------------------------------------------

RUNNING_ELSEWHERE = task(status=Status.RUNNING, worker=OTHER, attempts=1)
LAST_ATTEMPT = task(status=Status.RUNNING, worker=OTHER, attempts=3)
OWNER = [
    ("owner beating", RUNNING_ELSEWHERE, alive(5), lc.standby(VT)),
    ("owner at the limit", RUNNING_ELSEWHERE, alive(10), lc.standby(VT)),
    ("owner silent too long", RUNNING_ELSEWHERE, alive(10.5), lc.TakeOver(RUNNING_ELSEWHERE)),
    ("owner deregistered", RUNNING_ELSEWHERE, None, lc.TakeOver(RUNNING_ELSEWHERE)),
    ("dead on the last attempt", LAST_ATTEMPT, None, lc.Fail),
]


@pytest.mark.parametrize(("case", "current", "owner", "expected"), OWNER)
def test_on_owner(case, current, owner, expected):
    got = lc.on_owner(current, owner, now=NOW, dead_after=10, visibility_timeout=VT)
    if expected is lc.Fail:
        assert isinstance(got, lc.Fail), case
        assert got.error.type == "WorkerLost" and OTHER in got.error.message
    else:
        assert got == expected, case


def test_after_take_over():
    won = task(status=Status.RUNNING, worker=ME, attempts=2)
    assert lc.after_take_over(won, VT) == lc.Run(won)
    assert lc.after_take_over(None, VT) == lc.standby(VT)


# -- outcome_of --------------------------------------------------------------------------------

OUTCOMES = [
    # (case, raised, result, cancelled, status, error type)
    ("returned", None, {"ok": 1}, False, Status.SUCCEEDED, None),
    ("returned, unstorable", None, float("nan"), False, Status.FAILED, "InvalidResult"),
    ("returned, too large", None, "x" * 200_000, False, Status.FAILED, "ResultTooLarge"),
    ("cancelled by the handler", TaskCancelled("stop"), None, True, Status.CANCELLED, "Cancelled"),
    ("timed out", TimeoutError(), None, False, None, "Timeout"),
    ("permanent", PermanentError("bad input"), None, False, Status.FAILED, "PermanentError"),
    ("raised after a cancel", ValueError("interrupted"), None, True, Status.CANCELLED, "Cancelled"),
    ("raised", ConnectionError("reset"), None, False, None, "ConnectionError"),
    ("raised, no message", KeyError(), None, False, None, "KeyError"),
]


@pytest.mark.parametrize(("case", "raised", "result", "cancelled", "status", "error"), OUTCOMES)
def test_outcome_of(case, raised, result, cancelled, status, error):
    got = lc.outcome_of(raised, result, payload={}, cancelled=cancelled, timeout=5)
    assert got.status is status, case
    assert (got.error.type if got.error else None) == error, case
    if status is Status.SUCCEEDED:
        assert got.result == result


def test_error_text_is_bounded_and_never_empty():
    long = lc.outcome_of(RuntimeError("e" * 10_000), None, payload={}, cancelled=False, timeout=5)
    assert long.error is not None and len(long.error.message) == lc.ERROR_TEXT_CHARS
    empty = lc.outcome_of(KeyError(), None, payload={}, cancelled=False, timeout=5)
    assert empty.error is not None and empty.error.message


def test_a_missing_handler_fails_for_good():
    got = lc.handler_missing("resize-v2")
    assert got.status is Status.FAILED and got.error is not None and got.error.type == "HandlerNotFound"


# -- on_outcome --------------------------------------------------------------------------------

BACKOFF_TYPE = TaskType(name="resize", handler="h", backoff_initial_seconds=2, backoff_max_seconds=10)
ERR = TaskError("ConnectionError", "reset")


@pytest.mark.parametrize(
    ("attempts", "jitter", "run_in", "hide"),
    [(1, 0.5, 1.0, 1), (2, 0.5, 2.0, 2), (3, 1.0, 8.0, 8), (9, 1.0, 10.0, 10), (1, 0.0, 0.0, 1)],
)
def test_a_retryable_failure_with_attempts_left_backs_off(attempts, jitter, run_in, hide):
    t = task(attempts=attempts, max_attempts=10)
    got = lc.on_outcome(t, lc.Outcome(None, error=ERR), BACKOFF_TYPE, now=NOW, jitter=jitter)
    assert got == lc.Requeue(NOW + timedelta(seconds=run_in), ERR, hide)


FINISHES = [
    ("success", 1, lc.Outcome(Status.SUCCEEDED, {"r": 1}), lc.Finish(Status.SUCCEEDED, {"r": 1})),
    (
        "retryable on the last attempt",
        3,
        lc.Outcome(None, error=ERR),
        lc.Finish(Status.FAILED, error=TaskError("ConnectionError", "reset (attempt 3 of 3)")),
    ),
    (
        "permanent on the first",
        1,
        lc.Outcome(Status.FAILED, error=TaskError("PermanentError", "bad")),
        lc.Finish(Status.FAILED, error=TaskError("PermanentError", "bad (attempt 1 of 3)")),
    ),
    (
        "cancelled",
        1,
        lc.Outcome(Status.CANCELLED, error=TaskError("Cancelled", "stop")),
        lc.Finish(Status.CANCELLED, error=TaskError("Cancelled", "stop")),
    ),
]


@pytest.mark.parametrize(("case", "attempts", "outcome", "expected"), FINISHES)
def test_on_outcome_finishes(case, attempts, outcome, expected):
    assert lc.on_outcome(task(attempts=attempts), outcome, TYPE, now=NOW, jitter=0.5) == expected, case


def test_a_refused_finish_is_recorded_as_a_failure_without_the_result():
    assert lc.RESULT_REFUSED.status is Status.FAILED and lc.RESULT_REFUSED.result is None
    assert lc.RESULT_REFUSED.error is not None and lc.RESULT_REFUSED.error.type == "ResultTooLarge"


def test_a_claim_rests_on_the_messages_copy_only_when_it_is_of_that_type_and_due():
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def message(task: Task | None) -> Message:
        copy = decode_message(encode_message("t1", "echo", task))[2] if task else None
        return Message("t1", "echo", "r", copy=copy)

    due = Task(id="t1", type="echo", payload={}, created_at=at, run_at=at)
    assert lc.claim_copy(message(due), "echo", at) is not None
    assert lc.claim_copy(message(None), "echo", at) is None
    assert lc.claim_copy(message(due), "other", at) is None
    later = due.with_(run_at=at + timedelta(seconds=1))
    assert lc.claim_copy(message(later), "echo", at) is None
