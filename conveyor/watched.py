"""A value loaded from files and loaded again when they change.

The TaskType registry, the API's tokens and the schedules are each a file or directory
mounted from a ConfigMap or Secret. Kubelet updates such a volume by repointing its
``..data`` symlink, so a change shows in what the paths *resolve to* even when size and
mtime stay the same; ``stat_signature`` captures both. ``Watched`` compares that
signature at most once per interval, on the caller's thread (no background thread), and
loads again only when it differs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

from conveyor.throttle import Throttle

T = TypeVar("T")

_UNREAD = object()


def stat_signature(targets: Iterable[Path]) -> tuple[Any, ...]:
    """The identity of each file that exists now (path, target, inode, mtime, size): any
    edit or kubelet ``..data`` swap changes it, so a watcher re-reads only then."""
    out: list[Any] = []
    for t in targets:
        try:
            st = os.stat(t)  # follows symlinks: a swapped ..data gives a new inode
        except FileNotFoundError:
            continue
        out.append((str(t), os.path.realpath(t), st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class Watched(Generic[T]):
    """Serves ``load()``'s value, loading again when ``signature()`` changes.

    ``current()`` is cheap enough for every request: one clock read, and one
    ``signature()`` per ``interval`` at most. A load that raises one of ``errors`` keeps
    the last good value in service (logged) and is not retried until the source changes
    again. ``reloads`` counts the loads that succeeded.
    """

    def __init__(
        self,
        what: str,
        load: Callable[[], T],
        signature: Callable[[], Hashable],
        initial: T,
        *,
        log: logging.Logger,
        errors: tuple[type[BaseException], ...] = (OSError, ValueError),
        describe: Callable[[T], str] = lambda value: "",
        interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what
        self._load = load
        self._signature_of = signature
        self._value = initial
        self._log = log
        self._errors = errors
        self._describe = describe
        self._signature: Hashable = _UNREAD
        self.reloads = 0
        self._refresh()
        self._check = Throttle(interval, self._refresh, monotonic)

    def _refresh(self) -> None:
        # The signature first: a change during the load shows as a new signature next time.
        signature = self._signature_of()
        if signature == self._signature:
            return
        self._signature = signature
        try:
            value = self._load()
        except self._errors as exc:
            self._log.error("%s unreadable, keeping the last one: %s", self._what, exc)
            return
        self._value = value
        self.reloads += 1
        self._log.info("%s loaded: %s", self._what, self._describe(value) or "none")

    def current(self) -> T:
        self._check()
        return self._value
