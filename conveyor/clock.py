"""Time as a dependency: the engine, the worker and the memory adapters read it from a
``Clock``, so a test can move time on instead of sleeping through a backoff or a delay."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from conveyor.model import now as wall_now


class Clock(Protocol):
    def now(self) -> datetime:
        """The current UTC time at the store's (millisecond) precision."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for intervals and deadlines."""

    def on_jump(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever time moves on other than by itself (a fake clock's
        ``advance``), so a waiter can look again at what came due."""


class SystemClock:
    def now(self) -> datetime:
        return wall_now()

    def monotonic(self) -> float:
        return time.monotonic()

    def on_jump(self, callback: Callable[[], None]) -> None:
        return None  # real time only flows


SYSTEM = SystemClock()


class FakeClock:
    """A clock that stands still until ``advance`` moves it; thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._start = start.replace(microsecond=start.microsecond // 1000 * 1000)
        self._elapsed = 0.0
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def now(self) -> datetime:
        with self._lock:
            at = self._start + timedelta(seconds=self._elapsed)
        return at.replace(microsecond=at.microsecond // 1000 * 1000)

    def monotonic(self) -> float:
        with self._lock:
            return 1000.0 + self._elapsed

    def on_jump(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._elapsed += seconds
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()
