"""Request rate limits (429 + Retry-After), counted in this API process: per token, and
failed authentications per client address.

The limits are ``limits`` strings, e.g. ``100/second;3000/minute``: every one must hold.
Counting is per replica (in memory), so N API replicas admit up to N times the rate; the
point is to stop one caller from starving the others of a replica, not global quotas.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

# How often the counts' expired entries are dropped (memory only: a window's count never
# includes an entry older than the window, dropped or not).
EXPIRE_EVERY_SECONDS = 1.0


class InlineExpiryStorage(MemoryStorage):
    """``limits``' memory storage with its expiry run inline, at most once a second, by the
    request that finds it due. The stock storage starts a ``threading.Timer`` on a hit
    whenever none is pending (it fires after 10 ms), i.e. a new thread for nearly every
    request below 100 a second: most of the limiter's CPU per request."""

    def __init__(self) -> None:
        super().__init__()
        self.timer.cancel()  # the one started by the constructor
        self._due = time.monotonic() + EXPIRE_EVERY_SECONDS

    def _MemoryStorage__schedule_expiry(self) -> None:  # the stock storage's hook, by its mangled name
        now = time.monotonic()
        if now >= self._due:
            self._due = now + EXPIRE_EVERY_SECONDS
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def parse_limits(spec: str, setting: str = "CONVEYOR_RATE_LIMIT") -> list[RateLimitItem]:
    """``off`` (or ``0``) means no limit; anything unparsable is a startup error."""
    if spec.strip().lower() in ("off", "none", "0", "false"):
        return []
    try:
        return list(parse_many(spec))
    except ValueError as exc:
        raise ValueError(
            f"{setting}={spec!r} is not a rate limit like '100/second;3000/minute' ({exc})"
        ) from exc


class RateLimiter:
    def __init__(self, spec: str, setting: str = "CONVEYOR_RATE_LIMIT") -> None:
        self.items = parse_limits(spec, setting)
        # A moving window: no burst of twice the limit across a window boundary.
        self._limiter = MovingWindowRateLimiter(InlineExpiryStorage())

    @property
    def enabled(self) -> bool:
        return bool(self.items)

    def hit(self, key: str) -> int | None:
        """Count one request for ``key``; None if allowed, else seconds to wait."""
        # Check every window before counting in any: a refused request uses up nothing.
        retry_after = self.check(key)
        if retry_after is None:
            self.count(key)
        return retry_after

    def check(self, key: str) -> int | None:
        """None if ``key`` has room in every window, else seconds to wait; counts nothing."""
        for item in self.items:
            if not self._limiter.test(item, key):
                reset = self._limiter.get_window_stats(item, key).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None

    def count(self, key: str) -> None:
        for item in self.items:
            self._limiter.hit(item, key)
