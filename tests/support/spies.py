"""A spy on one method of a live object (a broker, a store): every call still goes
through, and its arguments and result are recorded for the test to assert on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Call:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any = None
    error: BaseException | None = None


@dataclass
class Spy:
    """The calls made through ``obj.name`` since ``spy`` wrapped it, in order."""

    obj: Any
    name: str
    original: Callable[..., Any]
    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = self.original(*args, **kwargs)
        except BaseException as exc:
            self._record(Call(args, kwargs, error=exc))
            raise
        self._record(Call(args, kwargs, result))
        return result

    def _record(self, call: Call) -> None:
        # Worker threads call brokers concurrently; the list is read while they do.
        with self._lock:
            self.calls.append(call)

    def arg(self, index: int, name: str | None = None) -> list[Any]:
        """One argument of every call so far, by position (or keyword ``name``)."""
        with self._lock:
            calls = list(self.calls)
        return [c.kwargs[name] if name and name in c.kwargs else c.args[index] for c in calls]

    def results(self) -> list[Any]:
        with self._lock:
            return [c.result for c in self.calls if c.error is None]

    def restore(self) -> None:
        setattr(self.obj, self.name, self.original)


def spy(obj: Any, name: str) -> Spy:
    """Replace ``obj.name`` with a recording pass-through; ``restore()`` undoes it."""
    recorder = Spy(obj, name, getattr(obj, name))
    setattr(obj, name, recorder)
    return recorder


@contextmanager
def spying(obj: Any, name: str) -> Iterator[Spy]:
    recorder = spy(obj, name)
    try:
        yield recorder
    finally:
        recorder.restore()
