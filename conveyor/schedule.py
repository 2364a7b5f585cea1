"""Schedules: which cron expressions and time zones a TaskSchedule may use.

TEMPORARY, minimal: only ``spec_problems``, what the operator needs to set a TaskSchedule's
Ready condition. The full module (planning, DST, jitter, catch-up) replaces this file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

# The nicknames of cron(8), as their five-field equivalents (@reboot has no slot: refused).
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def expand(schedule: str) -> str:
    """The five-field form of ``schedule`` (a nickname expanded)."""
    return MACROS.get(schedule.strip().lower(), schedule.strip())


def spec_problems(schedule: str, time_zone: str) -> list[str]:
    """Why ``schedule`` / ``time_zone`` cannot be used, each naming its field ([] when both can)."""
    problems: list[str] = []
    fields = expand(schedule).split()
    if schedule.strip().startswith("@") and schedule.strip().lower() not in MACROS:
        problems.append(
            f"spec.schedule: {schedule!r} is not a known nickname; use one of {', '.join(MACROS)}"
        )
    elif len(fields) != 5:
        # cronsim also takes a sixth (seconds) field; standard cron has exactly five.
        problems.append(
            f"spec.schedule: {schedule!r} has {len(fields)} fields; "
            "standard cron has 5 (minute hour day-of-month month day-of-week)"
        )
    else:
        try:
            CronSim(" ".join(fields), datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            problems.append(f"spec.schedule: {schedule!r} is not a valid cron expression: {exc}")
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        # ValueError: not a zone key at all (an absolute path, '..').
        reason = "no such zone in the IANA database" if isinstance(exc, ZoneInfoNotFoundError) else exc
        problems.append(f"spec.timeZone: {time_zone!r} is not an IANA time zone ({reason})")
    return problems
