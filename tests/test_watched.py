"""conveyor.watched: the one file watcher under the TaskType registry, the tokens and the
schedules. Its source and its clock are functions here, so nothing sleeps."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from conveyor import tokens
from conveyor.watched import Watched, stat_signature

log = logging.getLogger("tests.watched")


class Source:
    """A source whose signature and content the test sets, counting the calls."""

    def __init__(self) -> None:
        self.version = 1
        self.broken = False
        self.loads = 0
        self.signatures = 0
        self.now = 0.0

    def signature(self) -> int:
        self.signatures += 1
        return self.version

    def load(self) -> str:
        self.loads += 1
        if self.broken:
            raise ValueError(f"version {self.version} is broken")
        return f"v{self.version}"

    def watch(self, interval: float = 1.0) -> Watched[str]:
        return Watched(
            "test source",
            self.load,
            self.signature,
            "",
            log=log,
            interval=interval,
            monotonic=lambda: self.now,
        )


def test_loads_at_start_and_again_only_when_the_signature_changes() -> None:
    src = Source()
    watched = src.watch()
    assert watched.current() == "v1" and src.loads == 1 and watched.reloads == 1
    src.now = 5.0
    assert watched.current() == "v1" and src.loads == 1  # same signature: no load
    src.version = 2
    src.now = 10.0
    assert watched.current() == "v2" and src.loads == 2 and watched.reloads == 2


def test_the_signature_is_checked_at_most_once_per_interval() -> None:
    src = Source()
    watched = src.watch(interval=1.0)
    src.version = 2
    for _ in range(100):
        assert watched.current() == "v1"
    assert src.signatures == 1  # the one at start
    src.now = 0.999
    assert watched.current() == "v1" and src.signatures == 1
    src.now = 1.0
    assert watched.current() == "v2" and src.signatures == 2


def test_a_failed_load_keeps_the_last_value_and_waits_for_the_next_change(caplog) -> None:
    src = Source()
    watched = src.watch()
    src.version, src.broken = 2, True
    src.now = 1.0
    with caplog.at_level(logging.ERROR, logger=log.name):
        assert watched.current() == "v1"
    assert "test source unreadable, keeping the last one: version 2 is broken" in caplog.text
    src.now = 2.0
    assert watched.current() == "v1" and src.loads == 2  # not retried: nothing changed
    src.version, src.broken = 3, False
    src.now = 3.0
    assert watched.current() == "v3" and watched.reloads == 2


def test_many_threads_at_once_load_a_change_once() -> None:
    src = Source()
    watched = src.watch()
    src.version, src.now = 2, 1.0
    barrier = threading.Barrier(16)
    seen: list[str] = []

    def read() -> None:
        barrier.wait()
        seen.append(watched.current())

    threads = [threading.Thread(target=read) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert src.loads == 2 and set(seen) <= {"v1", "v2"} and watched.current() == "v2"


def test_the_signature_tells_a_symlink_swap_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).write_text("same size")
        os.utime(tmp_path / name, ns=(10**18, 10**18))
    link = tmp_path / "current"
    link.symlink_to("a")
    before = stat_signature([link, tmp_path / "missing"])
    link.unlink()
    link.symlink_to("b")
    assert stat_signature([link, tmp_path / "missing"]) != before
    assert stat_signature([tmp_path / "missing"]) == ()


def test_tokens_fail_closed_when_the_file_goes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    entry = tokens.TokenEntry("ci", tokens.hash_token("secret"), frozenset({tokens.READ}))
    tokens.write_tokens_file(path, tokens.TokenSet([entry]))
    watcher = tokens.TokensWatcher(path, interval=0.0)
    assert watcher.current().find("secret") == entry
    path.write_text("{not json")
    assert watcher.current().find("secret") == entry  # invalid: the last good tokens stay
    path.unlink()
    assert watcher.current().find("secret") is None and len(watcher.current()) == 0


def test_tokens_start_empty_without_a_file_and_load_it_when_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    watcher = tokens.TokensWatcher(path, interval=0.0)
    assert len(watcher.current()) == 0
    entry = tokens.TokenEntry("ci", tokens.hash_token("secret"), frozenset({tokens.READ}))
    tokens.write_tokens_file(path, tokens.TokenSet([entry]))
    assert watcher.current().find("secret") == entry
