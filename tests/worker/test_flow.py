"""conveyor.lifecycle.flow as tables: the GCRA arithmetic against a fake clock, the
concurrency wait, and what a task holding a rate reservation does. No I/O."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.lifecycle import flow
from conveyor.model import Waiting, WaitReason
from conveyor.ports import BROKER_MAX_DELAY_SECONDS

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tat", "now", "interval", "capacity", "start", "new_tat"),
    [
        (None, 1000, 100, 1, 1000, 1100),  # never used: go, one interval reserved
        (None, 1000, 100, 5, 1000, 1100),
        (1100, 1000, 100, 1, 1100, 1200),  # capacity 1: the next turn is the tat itself
        (1100, 1000, 100, 2, 1000, 1200),  # burst 2: one more may go now
        (1500, 1000, 100, 5, 1100, 1600),  # 5 reserved ahead, burst 5: the sixth waits 100 ms
        (500, 1000, 100, 3, 1000, 1100),  # idle since: the bucket is full again, no credit banked
        (1000, 1000, 100, 1, 1000, 1100),  # exactly due
    ],
)
def test_gcra_step(tat, now, interval, capacity, start, new_tat):
    assert flow.gcra(tat, now, interval, capacity) == (start, new_tat)


@pytest.mark.parametrize("capacity", [1, 3, 10])
@pytest.mark.parametrize("interval", [50, 100, 333])
def test_gcra_starts_in_any_window_are_at_most_capacity_plus_window_over_interval(capacity, interval):
    # Arrivals at random times on a fake clock; every arrival reserves its start.
    rng = random.Random(capacity * 1000 + interval)
    tat, now, starts = None, 0, []
    for _ in range(300):
        now += rng.choice([0, 0, 0, 1, 10, interval, 5 * interval])
        start, tat = flow.gcra(tat, now, interval, capacity)
        assert start >= now
        starts.append(start)
    starts.sort()
    for i, j in itertools.combinations(range(len(starts)), 2):
        window = starts[j] - starts[i]
        assert j - i + 1 <= capacity + window / interval, (i, j, window)


def test_gcra_sustains_its_rate_under_a_backlog():
    tat, starts = None, []
    for _ in range(100):  # 100 arrive at once: 10 at once (the burst), then one per interval
        start, tat = flow.gcra(tat, 0, 100, 10)
        starts.append(start)
    assert starts[:10] == [0] * 10
    assert starts[10:] == [100 * n for n in range(1, 91)]


@pytest.mark.parametrize(
    ("waited", "jitter", "expected"),
    [
        (0, 0.0, 1),
        (0, 0.99, 2),
        (20, 0.0, 2),
        (20, 0.99, 4),
        (60, 0.5, 6),
        (3600, 0.0, 5),  # bounded: a long wait still looks every 5-10 s
        (3600, 0.99, 10),
        (-5, 0.5, 2),  # a clock that stepped back waits as one that has not waited
    ],
)
def test_concurrency_wait_grows_with_the_wait_within_bounds(waited, jitter, expected):
    assert flow.concurrency_wait(waited, jitter) == expected


def test_concurrency_wait_is_whole_seconds_between_the_bounds():
    for waited in (0, 1, 5, 20, 60, 1e6):
        for jitter in (0.0, 0.25, 0.5, 0.75, 0.999):
            wait = flow.concurrency_wait(waited, jitter)
            assert isinstance(wait, int) and flow.MIN_WAIT_SECONDS <= wait <= flow.MAX_WAIT_SECONDS


@pytest.mark.parametrize(
    ("waiting", "held"),
    [
        (None, None),
        (Waiting(WaitReason.CONCURRENCY, NOW), None),
        (Waiting(WaitReason.RATE, NOW), NOW),
        (Waiting(WaitReason.RATE, NOW + timedelta(hours=1)), NOW + timedelta(hours=1)),
    ],
)
def test_a_returning_task_holds_a_reservation_only_by_its_rate_record(waiting, held):
    assert flow.reservation(waiting) == held


@pytest.mark.parametrize(
    ("ahead", "turn"),
    [
        (-5.0, flow.Go()),
        (0.0, flow.Go()),
        (0.25, flow.Pause(0.25)),
        (0.999, flow.Pause(0.999)),
        (1.0, flow.Later(1)),
        (2.7, flow.Later(2)),  # never past the turn: the rest is a Pause when it comes back
        (5000.0, flow.Later(BROKER_MAX_DELAY_SECONDS)),  # re-sent again, not reserved again
    ],
)
def test_rate_turn(ahead, turn):
    assert flow.rate_turn(NOW + timedelta(seconds=ahead), NOW) == turn


@pytest.mark.parametrize(
    ("current", "reason", "write"),
    [
        (None, WaitReason.CONCURRENCY, True),
        (Waiting(WaitReason.CONCURRENCY, NOW), WaitReason.CONCURRENCY, False),  # unchanged
        (Waiting(WaitReason.RATE, NOW), WaitReason.CONCURRENCY, False),  # keeps its turn
    ],
)
def test_the_waiting_record_is_written_only_when_it_changes(current, reason, write):
    assert flow.record_wait(current, reason) is write


def test_epoch_ms_round_trips():
    at = datetime(2026, 6, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert flow.from_epoch_ms(flow.epoch_ms(at)) == at
    assert flow.interval_ms(0.1) == 100 and flow.interval_ms(0.0) == 1
