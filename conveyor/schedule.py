"""Schedules, planned as pure functions: which slots are due, which run, which are skipped.

Nothing here reads a clock: every function is given ``now``, so the firing loop
(conveyor/scheduler.py) and the tests agree on every decision, and several API replicas
planning the same schedule at the same moment plan the same slots.

Slots are wall-clock times in the schedule's ``timeZone``. The cron expression is walked
over naive wall times (cronsim) and each one is placed in the zone (zoneinfo):

- a wall time that does not exist (the hour skipped when clocks spring forward) is
  skipped, once;
- a wall time that occurs twice (the hour repeated when clocks fall back) runs once, at
  its first occurrence.

A slot's identity is its UTC time; the firing loop's idempotency key is built from it, so
a slot fires at most once whatever the replica count. Jitter delays when a slot is due by
a deterministic per-(schedule, slot) offset, never the slot itself.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from conveyor.model import Status

API_VERSION = "conveyor.dev/v1alpha1"
SCHEDULES_FILE = "schedules.json"
POLICIES = ("Allow", "Forbid", "Replace")

# The cron macros, as Vixie cron defines them. @reboot has no slot and is refused.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# No zone moves its clocks by more than this at once (DST is 1 h; Lord Howe 30 min), so
# walking wall times from this far either side of an instant sees every slot near it.
_SHIFT = timedelta(hours=3)
# A plan looks back at most this many slots: after a long outage, older ones are only
# skipped, and counting each of a year of per-minute slots would serve nobody.
MAX_LOOKBACK = 1000


def expression(schedule: str) -> str:
    """The 5-field cron expression a schedule stands for (macros expanded)."""
    text = " ".join(schedule.split())
    return MACROS.get(text.lower(), text)


def spec_problems(schedule: str, time_zone: str) -> list[str]:
    """Why ``schedule`` and ``time_zone`` cannot be planned ([] when both are valid)."""
    problems = []
    if not isinstance(schedule, str) or not schedule.strip():
        problems.append("schedule: must be a 5-field cron expression or a macro such as @daily")
    else:
        expr = expression(schedule)
        if expr.startswith("@"):
            problems.append(f"schedule: unknown macro {schedule.strip()!r}; known: {', '.join(MACROS)}")
        elif len(expr.split()) != 5:
            problems.append(f"schedule: {schedule!r} has {len(expr.split())} fields; a cron expression has 5")
        else:
            try:
                walk = CronSim(expr, datetime(2000, 1, 1))
                next(walk)
            except CronSimError as exc:
                problems.append(f"schedule: {schedule!r} is not a valid cron expression: {exc}")
            except StopIteration:
                problems.append(f"schedule: {schedule!r} never matches a date")
    try:
        zone(time_zone)
    except ValueError as exc:
        problems.append(f"timeZone: {exc}")
    return problems


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError when there is none by that name."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"{name!r} is not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"{name!r} is not a known IANA time zone") from exc


@dataclass(frozen=True)
class ScheduleSpec:
    """One TaskSchedule as the API reads it: an item of ``schedules.json``."""

    name: str
    namespace: str
    task_type: str
    payload: Any
    schedule: str
    time_zone: str = "UTC"
    jitter_seconds: int = 0
    concurrency_policy: str = "Allow"
    starting_deadline_seconds: int | None = None
    max_catch_up: int = 1
    suspend: bool = False
    max_attempts: int | None = None
    ready: bool = True
    reason: str = ""

    @property
    def key(self) -> str:
        """``namespace/name``: what identifies the schedule in the store and in keys."""
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScheduleSpec:
        """Read an item of ``schedules.json``; ValueError names the first bad field."""
        if not isinstance(data, Mapping):
            raise ValueError("a schedule must be an object")

        def text(name: str, default: str | None = None) -> str:
            value = data.get(name, default)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}: a non-empty string is required")
            return value

        def integer(name: str, default: int | None, low: int, high: int) -> int | None:
            value = data.get(name, default)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name}: an integer from {low} to {high} is required")
            return value

        def flag(name: str, default: bool) -> bool:
            value = data.get(name, default)
            if not isinstance(value, bool):
                raise ValueError(f"{name}: true or false is required")
            return value

        policy = data.get("concurrencyPolicy", "Allow")
        if policy not in POLICIES:
            raise ValueError(f"concurrencyPolicy: one of {', '.join(POLICIES)} is required")
        reason = data.get("reason", "")
        return cls(
            name=text("name"),
            namespace=text("namespace", "default"),
            task_type=text("taskType"),
            payload=data.get("payload", {}),
            schedule=text("schedule"),
            time_zone=text("timeZone", "UTC"),
            jitter_seconds=integer("jitterSeconds", 0, 0, 24 * 3600) or 0,
            concurrency_policy=policy,
            starting_deadline_seconds=integer("startingDeadlineSeconds", None, 0, 366 * 24 * 3600),
            max_catch_up=integer("maxCatchUp", 1, 0, MAX_LOOKBACK) or 0,
            suspend=flag("suspend", False),
            max_attempts=integer("maxAttempts", None, 1, 100),
            ready=flag("ready", True),
            reason=reason if isinstance(reason, str) else str(reason),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "taskType": self.task_type,
            "payload": self.payload,
            "schedule": self.schedule,
            "timeZone": self.time_zone,
            "jitterSeconds": self.jitter_seconds,
            "concurrencyPolicy": self.concurrency_policy,
            "startingDeadlineSeconds": self.starting_deadline_seconds,
            "maxCatchUp": self.max_catch_up,
            "suspend": self.suspend,
            "maxAttempts": self.max_attempts,
            "ready": self.ready,
            "reason": self.reason,
        }

    @classmethod
    def from_manifest(cls, doc: Mapping[str, Any], namespace: str = "default") -> ScheduleSpec:
        """Build from a ``kind: TaskSchedule`` resource (the YAML a user would apply),
        checked as the operator checks it: an invalid cron or zone makes it not ready."""
        if doc.get("kind") != "TaskSchedule":
            raise ValueError(f"not a TaskSchedule: kind={doc.get('kind')!r}")
        meta = doc.get("metadata") or {}
        spec = dict(doc.get("spec") or {})
        spec["name"] = meta.get("name")
        spec["namespace"] = meta.get("namespace") or namespace
        spec.pop("ready", None)
        spec.pop("reason", None)
        built = cls.from_json(spec)
        problems = spec_problems(built.schedule, built.time_zone)
        if problems:
            return replace(built, ready=False, reason="; ".join(problems))
        return built


def to_rfc3339(value: datetime) -> str:
    """A slot as the idempotency key and the API write it: UTC, seconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def idempotency_key(spec: ScheduleSpec, slot: datetime) -> str:
    """The key that makes a second fire of this slot return the first one's task."""
    return f"schedule:{spec.key}:{to_rfc3339(slot)}"


# -- slots ------------------------------------------------------------------------------


def _placed(wall: datetime, tz: ZoneInfo) -> datetime | None:
    """A naive wall time in ``tz`` as an aware UTC time: its first occurrence, or None
    when the zone skips it (the round trip does not come back to the same wall time)."""
    aware = wall.replace(tzinfo=tz, fold=0)
    utc = aware.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != wall:
        return None
    return utc


def _walk(spec: ScheduleSpec, start: datetime, reverse: bool) -> Iterator[datetime]:
    """Slot times (aware UTC) from ``start``, strictly after it (or strictly before it
    when ``reverse``), in order. Each wall time gives at most one slot."""
    tz = zone(spec.time_zone)
    shift = -_SHIFT if not reverse else _SHIFT
    wall = start.astimezone(tz).replace(tzinfo=None, microsecond=0) + shift
    for candidate in CronSim(expression(spec.schedule), wall, reverse=reverse):
        slot = _placed(candidate, tz)
        if slot is None:
            continue
        if (slot > start) if not reverse else (slot < start):
            yield slot


def next_runs(spec: ScheduleSpec, after: datetime, n: int) -> list[datetime]:
    """The next ``n`` slots strictly after ``after``, as aware UTC times (DST rules
    applied). Slot times, not jittered due times."""
    out: list[datetime] = []
    if n <= 0:
        return out
    for slot in _walk(spec, after, reverse=False):
        out.append(slot)
        if len(out) >= n:
            break
    return out


def previous_slot(spec: ScheduleSpec, at: datetime) -> datetime | None:
    """The newest slot at or before ``at``."""
    return next(_walk(spec, at + timedelta(microseconds=1), reverse=True), None)


def jitter(spec: ScheduleSpec, slot: datetime) -> timedelta:
    """The slot's delay in [0, jitterSeconds]: a hash of (schedule, slot), so every
    replica computes the same one and spreads schedules sharing a slot."""
    if spec.jitter_seconds <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{spec.key}|{to_rfc3339(slot)}".encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % (spec.jitter_seconds + 1))


def due_at(spec: ScheduleSpec, slot: datetime) -> datetime:
    return slot + jitter(spec, slot)


# -- plans ------------------------------------------------------------------------------


class Outcome(enum.StrEnum):
    """What became of a slot; the label of conveyor_schedule_fires_total."""

    SUBMITTED = "submitted"
    CATCH_UP = "catch_up"
    SKIPPED_OVERLAP = "skipped_overlap"
    SKIPPED_DEADLINE = "skipped_deadline"
    FAILED = "failed"  # the task could not be submitted (its payload or type was refused)


@dataclass(frozen=True)
class Plan:
    """What to do with a schedule now.

    ``fire``: (slot, SUBMITTED or CATCH_UP), oldest first. ``skipped``: missed slots that
    are not run (past ``startingDeadlineSeconds`` or beyond ``maxCatchUp``). ``dropped``:
    slots that passed while the schedule was suspended or not ready (never run, never
    counted as missed). ``latest``: the newest slot due, which the state moves to once
    the plan is carried out. ``next_slot``: the first slot after ``now``.
    """

    fire: tuple[tuple[datetime, Outcome], ...] = ()
    skipped: tuple[datetime, ...] = ()
    dropped: tuple[datetime, ...] = ()
    latest: datetime | None = None
    next_slot: datetime | None = None


def plan(spec: ScheduleSpec, since: datetime, now: datetime, grace_seconds: float = 60.0) -> Plan:
    """The slots after ``since`` (the last slot handled, or when the loop first saw the
    schedule) that are due at ``now``, and what to do with each.

    The newest due slot is on time if it became due at most ``grace_seconds`` ago (and
    within the deadline): it runs as SUBMITTED. Every other due slot was missed: those
    within ``startingDeadlineSeconds`` of now are eligible, the newest ``maxCatchUp`` of
    them run as CATCH_UP, the rest are skipped.
    """
    upcoming = next(_walk(spec, now, reverse=False), None)
    due: list[datetime] = []  # newest first
    for slot in _walk(spec, now + timedelta(microseconds=1), reverse=True):
        if slot <= since or len(due) >= MAX_LOOKBACK:
            break
        if due_at(spec, slot) <= now:
            due.append(slot)
        elif upcoming is None or slot < upcoming:
            upcoming = slot  # passed, but its jittered time has not come yet
    if not due:
        return Plan(next_slot=upcoming)
    latest = due[0]
    if spec.suspend or not spec.ready:
        return Plan(dropped=tuple(reversed(due)), latest=latest, next_slot=upcoming)

    def lag(slot: datetime) -> float:
        return (now - due_at(spec, slot)).total_seconds()

    deadline = spec.starting_deadline_seconds
    fire: list[tuple[datetime, Outcome]] = []
    missed = due
    if lag(latest) <= grace_seconds and (deadline is None or lag(latest) <= deadline):
        fire.append((latest, Outcome.SUBMITTED))
        missed = due[1:]
    eligible = [s for s in missed if deadline is None or lag(s) <= deadline]
    chosen = eligible[: spec.max_catch_up]
    fire += [(s, Outcome.CATCH_UP) for s in chosen]
    skipped = [s for s in missed if s not in chosen]
    return Plan(
        fire=tuple(sorted(fire)),
        skipped=tuple(reversed(skipped)),
        latest=latest,
        next_slot=upcoming,
    )


class Action(enum.StrEnum):
    FIRE = "fire"
    SKIP = "skip"
    REPLACE = "replace"


def decide(policy: str, previous: Status | None) -> Action:
    """The concurrency policy's answer, given the status of the schedule's previous task
    (None when there is none or it has expired): CronJob's Allow, Forbid and Replace."""
    active = previous in (Status.QUEUED, Status.RUNNING)
    if not active or policy == "Allow":
        return Action.FIRE
    if policy == "Forbid":
        return Action.SKIP
    return Action.REPLACE
