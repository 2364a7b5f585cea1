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
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

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
