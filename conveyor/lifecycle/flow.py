"""Fleet-wide flow control, decided without I/O: the rate limit's arithmetic (GCRA), how
long a task over its concurrency limit waits before it looks again, and what a task that
comes back holding a rate reservation does.

Times are epoch milliseconds in the GCRA functions (what the store keeps) and datetimes
elsewhere; the clock, the jitter and what the store answered come in as arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from conveyor.model import Waiting, WaitReason
from conveyor.ports import BROKER_MAX_DELAY_SECONDS

# A task over its concurrency limit looks again after at least this long ...
MIN_WAIT_SECONDS = 1
# ... and, however long it has waited, at most this long: a freed slot is found soon.
MAX_WAIT_SECONDS = 10
# The wait grows by a second per this many seconds the task has waited.
WAIT_GROWTH_SECONDS = 10.0
# A start due sooner than this is waited for in the worker, holding the message: SQS
# delays are whole seconds, and a re-send would make it later than its turn.
IN_PROCESS_WAIT_SECONDS = 1.0


def epoch_ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


def from_epoch_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def gcra(tat_ms: int | None, now_ms: int, interval_ms: int, capacity: int) -> tuple[int, int]:
    """One reservation of a GCRA limit: (start, new theoretical arrival time).

    ``tat_ms`` is the stored theoretical arrival time (None: never used), ``interval_ms``
    the time one start takes from the bucket (period / limit), ``capacity`` the starts it
    allows at once (the burst). A start is free when ``tat - tau <= now``; otherwise its
    turn is ``tat - tau``. Every call reserves: the new tat moves on by one interval from
    wherever the reservations stand. Starts in any window of length e are then at most
    capacity + e / interval."""
    tau = (max(1, capacity) - 1) * interval_ms
    tat = now_ms if tat_ms is None else tat_ms
    start = max(now_ms, tat - tau)
    return start, max(tat, now_ms) + interval_ms


def interval_ms(seconds: float) -> int:
    """An emission interval in whole milliseconds (at least 1)."""
    return max(1, round(seconds * 1000))


def concurrency_wait(waited_seconds: float, jitter: float) -> int:
    """Seconds a task over its concurrency limit waits before it looks again.

    Whole seconds (an SQS delay), at least MIN_WAIT_SECONDS; the longer it has waited, the
    longer it waits, up to MAX_WAIT_SECONDS, so a long queue behind a small limit costs a
    bounded number of looks per task. ``jitter`` (uniform in [0, 1)) spreads the waits
    over the lower half of the range, so the tasks turned away together do not all come
    back together."""
    ceiling = min(
        float(MAX_WAIT_SECONDS), MIN_WAIT_SECONDS + 1 + max(0.0, waited_seconds) / WAIT_GROWTH_SECONDS
    )
    floor = max(float(MIN_WAIT_SECONDS), ceiling / 2)
    wait = floor + (ceiling - floor) * min(max(jitter, 0.0), 1.0)
    return max(MIN_WAIT_SECONDS, min(MAX_WAIT_SECONDS, round(wait)))


def reservation(waiting: Waiting | None) -> datetime | None:
    """The start time a returning task holds from an earlier rate reservation, if any.

    It was recorded with the reservation (``waiting.reason == rate``), and the claim
    clears it: a task holding one takes no second token, however many times it comes
    back before its turn."""
    if waiting is not None and waiting.reason is WaitReason.RATE:
        return waiting.until
    return None


@dataclass(frozen=True)
class Go:
    """Start now."""


@dataclass(frozen=True)
class Pause:
    """The turn is less than a second away: wait for it in the worker."""

    seconds: float


@dataclass(frozen=True)
class Later:
    """The turn is further away: re-send the message, delayed ``delay`` whole seconds
    (never past the turn; what is left over is a Pause when it comes back)."""

    delay: int


def rate_turn(start: datetime, now: datetime) -> Go | Pause | Later:
    """What a task whose rate-limited start is ``start`` does at ``now``."""
    wait = (start - now).total_seconds()
    if wait <= 0:
        return Go()
    if wait < IN_PROCESS_WAIT_SECONDS:
        return Pause(wait)
    return Later(min(BROKER_MAX_DELAY_SECONDS, max(1, math.floor(wait))))


def record_wait(current: Waiting | None, reason: WaitReason) -> bool:
    """Whether a task now waiting for ``reason`` should have its record written: only
    when the reason changes (the record is informational; a rate reservation is written
    by itself, once per token). A held rate reservation is never overwritten by a
    concurrency wait: the task keeps its turn."""
    if current is None:
        return True
    if current.reason is WaitReason.RATE:
        return False
    return current.reason is not reason
