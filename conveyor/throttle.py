"""A call made at most once per interval, however many threads ask for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Throttle:
    """Runs ``fn`` when ``interval`` seconds have passed since the last run.

    The file watchers (``conveyor.watched``) call this on every request, so the common
    path is one clock read and no lock; the lock only decides who runs the check.
    ``monotonic`` is a plain function (a ``Clock``'s method in a test), so the client
    side, which reads tokens files, needs nothing of the engine's.
    """

    def __init__(
        self, interval: float, fn: Callable[[], None], monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._fn = fn
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._last = monotonic()

    def __call__(self) -> None:
        now = self._monotonic()
        if now - self._last >= self.interval:
            with self._lock:
                if now - self._last >= self.interval:
                    self._last = now
                    self._fn()
