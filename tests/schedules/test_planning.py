"""The pure planning core, table-driven: DST, jitter, deadline and catch-up, policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor.model import Status
from conveyor.schedule import (
    Action,
    Outcome,
    ScheduleSpec,
    decide,
    due_at,
    idempotency_key,
    jitter,
    next_runs,
    plan,
    spec_problems,
)


def spec(schedule: str = "* * * * *", **kw) -> ScheduleSpec:
    return ScheduleSpec(
        name=kw.pop("name", "s"), namespace="default", task_type="echo", payload={}, schedule=schedule, **kw
    )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(times: list[datetime]) -> list[str]:
    return [t.strftime("%Y-%m-%dT%H:%M") for t in times]


# America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        # 02:30 does not exist on 03-08: skipped once, then daily again (EDT = UTC-4).
        ("30 2 * * *", utc(2026, 3, 6), ["2026-03-06T07:30", "2026-03-07T07:30", "2026-03-09T06:30"]),
        # 03:30 exists every day; the offset changes under it.
        ("30 3 * * *", utc(2026, 3, 7), ["2026-03-07T08:30", "2026-03-08T07:30", "2026-03-09T07:30"]),
        # Every 30 minutes over the gap: 01:30 EST, then 03:00 EDT (02:00 and 02:30 skipped).
        (
            "*/30 * * * *",
            utc(2026, 3, 8, 6, 15),
            ["2026-03-08T06:30", "2026-03-08T07:00", "2026-03-08T07:30"],
        ),
        # 01:30 happens twice on 11-01: it runs once, at its first occurrence (EDT).
        ("30 1 * * *", utc(2026, 10, 31), ["2026-10-31T05:30", "2026-11-01T05:30", "2026-11-02T06:30"]),
        # Hourly over the repeated hour: 01:00 EDT, then 02:00 EST; 01:00 EST does not repeat it.
        ("0 * * * *", utc(2026, 11, 1, 4, 30), ["2026-11-01T05:00", "2026-11-01T07:00", "2026-11-01T08:00"]),
        # Every 30 minutes: 01:00 and 01:30 once each.
        (
            "*/30 * * * *",
            utc(2026, 11, 1, 4, 45),
            ["2026-11-01T05:00", "2026-11-01T05:30", "2026-11-01T07:00"],
        ),
        ("@daily", utc(2026, 11, 1), ["2026-11-01T04:00", "2026-11-02T05:00", "2026-11-03T05:00"]),
    ],
)
def test_dst_rules_on_new_york(schedule: str, after: datetime, expected: list[str]) -> None:
    assert iso(next_runs(spec(schedule, time_zone="America/New_York"), after, 3)) == expected


def test_dst_from_inside_the_repeated_hour_finds_the_slots_before_it() -> None:
    # 06:20 UTC is 01:20 EST, the second 01:20: the first occurrence of 01:30 (05:30 UTC)
    # has passed, so the next slot is 02:30 EST; a plan at that instant still sees 01:45
    # EDT (05:45 UTC) as due, though its wall time is after 01:20.
    s = spec("15,30,45 1,2 * * *", time_zone="America/New_York")
    assert iso(next_runs(s, utc(2026, 11, 1, 6, 20), 2)) == ["2026-11-01T07:15", "2026-11-01T07:30"]
    p = plan(s, utc(2026, 11, 1, 5, 40), utc(2026, 11, 1, 6, 20))
    assert iso([slot for slot, _ in p.fire] + list(p.skipped)) == ["2026-11-01T05:45"]


def test_a_slot_fires_once_over_a_whole_fall_back_day_of_ticks() -> None:
    """Walk 2026-11-01 minute by minute, as a loop ticking would: each 01:xx slot once."""
    s = spec("*/20 * * * *", time_zone="America/New_York")
    since, fired = utc(2026, 11, 1, 3), []
    t = since
    while t < utc(2026, 11, 1, 9):
        t += timedelta(minutes=1)
        p = plan(s, since, t)
        fired += [slot for slot, _ in p.fire]
        since = p.latest or since
    assert len(fired) == len(set(fired)) == 15  # 6 h of 3 an hour, less the repeated hour
    assert all(o == 0 for o in [f.minute % 20 for f in fired])


@pytest.mark.parametrize(
    ("schedule", "zone", "problems"),
    [
        ("*/5 * * * *", "UTC", 0),
        ("@hourly", "Europe/Paris", 0),
        ("0 9 * * MON-FRI", "America/New_York", 0),
        ("61 * * * *", "UTC", 1),
        ("0 0 30 2 *", "UTC", 1),
        ("* * * * * *", "UTC", 1),  # six fields: seconds are not standard cron
        ("@reboot", "UTC", 1),
        ("", "UTC", 1),
        ("* * * * *", "Mars/Olympus", 1),
        ("* * * * *", "../../etc/passwd", 1),
        ("nope", "Nowhere", 2),
    ],
)
def test_spec_problems(schedule: str, zone: str, problems: int) -> None:
    found = spec_problems(schedule, zone)
    assert len(found) == problems, found
    assert all(p.startswith(("schedule:", "timeZone:")) for p in found)


def test_jitter_is_bounded_deterministic_and_spread() -> None:
    s = spec(jitter_seconds=30)
    slots = next_runs(s, utc(2026, 1, 1), 500)
    offsets = [jitter(s, slot) for slot in slots]
    assert all(timedelta(0) <= o <= timedelta(seconds=30) for o in offsets)
    assert offsets == [jitter(s, slot) for slot in slots]  # every replica agrees
    assert len({o.total_seconds() for o in offsets}) > 20  # and it spreads
    assert {jitter(spec(), slot) for slot in slots} == {timedelta(0)}
    # The key is the slot's, not the jittered time's.
    assert idempotency_key(s, slots[0]) == "schedule:default/s:2026-01-01T00:01:00Z"
    # A jittered slot is not due before its offset has passed.
    slot = slots[0]
    offset = jitter(s, slot)
    if offset:
        early = plan(s, slot - timedelta(seconds=1), slot + offset - timedelta(microseconds=1))
        assert not early.fire and early.next_slot == slot
    on_time = plan(s, slot - timedelta(seconds=1), due_at(s, slot))
    assert on_time.fire == ((slot, Outcome.SUBMITTED),)


T0 = utc(2026, 5, 1, 12, 0)
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("kw", "down", "fire", "skipped"),
    [
        # On time: the newest slot only.
        ({}, 1.01, [(1, "submitted")], []),
        # After a 10.5-hour outage: the newest missed slot catches up (maxCatchUp 1).
        ({}, 10.5, [(10, "catch_up")], list(range(1, 10))),
        ({"max_catch_up": 3}, 10.5, [(8, "catch_up"), (9, "catch_up"), (10, "catch_up")], list(range(1, 8))),
        ({"max_catch_up": 0}, 10.5, [], list(range(1, 11))),
        # Only slots within the deadline are eligible at all.
        (
            {"max_catch_up": 5, "starting_deadline_seconds": 9000},
            10.5,
            [(8, "catch_up"), (9, "catch_up"), (10, "catch_up")],
            list(range(1, 8)),
        ),
        ({"starting_deadline_seconds": 10}, 10.5, [], list(range(1, 11))),
        # A slot due within the deadline but beyond it when seen is skipped, not run late.
        ({"starting_deadline_seconds": 10}, 1.01, [], [1]),
        # Back in time for the newest slot: it runs on time, one older missed slot catches up.
        ({"max_catch_up": 1}, 3.005, [(2, "catch_up"), (3, "submitted")], [1]),
    ],
)
def test_deadline_and_catch_up(kw: dict, down: float, fire: list, skipped: list) -> None:
    s = spec("0 * * * *", **kw)
    p = plan(s, T0, T0 + down * HOUR)
    assert [((slot - T0) // HOUR, str(o)) for slot, o in p.fire] == fire
    assert [(slot - T0) // HOUR for slot in p.skipped] == skipped
    assert p.latest == T0 + int(down) * HOUR and p.next_slot == T0 + (int(down) + 1) * HOUR


def test_a_year_down_looks_back_a_bounded_number_of_slots() -> None:
    p = plan(spec(), T0 - timedelta(days=365), T0 + timedelta(seconds=30))
    assert len(p.fire) + len(p.skipped) == 1000 and p.fire[-1][0] == T0


def test_suspended_and_not_ready_drop_their_slots() -> None:
    for s in (spec(suspend=True), spec(ready=False, reason="x")):
        p = plan(s, T0, T0 + timedelta(minutes=3, seconds=5))
        assert not p.fire and not p.skipped and len(p.dropped) == 3 and p.latest == T0 + timedelta(minutes=3)


@pytest.mark.parametrize(
    ("policy", "previous", "action"),
    [
        ("Allow", Status.RUNNING, Action.FIRE),
        ("Allow", None, Action.FIRE),
        ("Forbid", Status.QUEUED, Action.SKIP),
        ("Forbid", Status.RUNNING, Action.SKIP),
        ("Forbid", Status.SUCCEEDED, Action.FIRE),
        ("Forbid", None, Action.FIRE),
        ("Replace", Status.RUNNING, Action.REPLACE),
        ("Replace", Status.QUEUED, Action.REPLACE),
        ("Replace", Status.FAILED, Action.FIRE),
    ],
)
def test_policy_decision(policy: str, previous: Status | None, action: Action) -> None:
    assert decide(policy, previous) is action


def test_the_json_item_round_trips_and_bad_fields_are_named() -> None:
    s = spec(
        "0 2 * * *", time_zone="Europe/Paris", jitter_seconds=5, concurrency_policy="Forbid", max_attempts=2
    )
    assert ScheduleSpec.from_json(s.to_json()) == s
    for field, value in [
        ("concurrencyPolicy", "Sometimes"),
        ("maxCatchUp", -1),
        ("jitterSeconds", "5"),
        ("suspend", "yes"),
        ("taskType", ""),
        ("maxAttempts", 0),
    ]:
        with pytest.raises(ValueError, match=field):
            ScheduleSpec.from_json(s.to_json() | {field: value})
