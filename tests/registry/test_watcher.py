"""RegistryWatcher: a mounted ConfigMap swapped by kubelet, bad files, and the YAML directory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from conveyor.registry import Registry, RegistryWatcher, TaskType, load
from tests.registry.conftest import TaskTypeDir


def _document(**types: dict[str, Any]) -> str:
    return json.dumps(Registry({n: TaskType.from_spec(n, s) for n, s in types.items()}).document())


class KubeletVolume:
    """A ConfigMap volume the way kubelet's atomic writer lays it out:

    tasktypes.json -> ..data/tasktypes.json;  ..data -> ..<timestamp>/ (the real files).
    An update writes a new timestamped dir and renames a fresh symlink over ``..data``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.generation = 0

    def publish(self, text: str, mtime_ns: int | None = None) -> None:
        self.generation += 1
        version = self.root / f"..2026_11_22_08_00_0{self.generation}.000000001"
        version.mkdir()
        (version / "tasktypes.json").write_text(text)
        if mtime_ns is not None:
            os.utime(version / "tasktypes.json", ns=(mtime_ns, mtime_ns))
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        os.replace(tmp, self.root / "..data")
        if not (self.root / "tasktypes.json").is_symlink():
            (self.root / "tasktypes.json").symlink_to("..data/tasktypes.json")
        if old is not None:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()


def _wait_until(predicate: Any, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_kubelet_symlink_swap_is_picked_up_within_5s(tmp_path: Path):
    volume = KubeletVolume(tmp_path / "tasktypes")
    # Same length and same mtime: only the symlink target tells the versions apart.
    first = _document(a={"handler": "echo", "maxAttempts": 3})
    second = _document(a={"handler": "echo", "maxAttempts": 7})
    assert len(first) == len(second)
    mtime = time.time_ns() - 10**9
    volume.publish(first, mtime)
    watcher = RegistryWatcher(volume.root)
    assert watcher.current()["a"].max_attempts == 3

    volume.publish(second, mtime)
    elapsed = _wait_until(lambda: watcher.current()["a"].max_attempts == 7, timeout=5.0)
    assert elapsed < 5.0
    assert watcher.reloads == 2


def test_an_invalid_registry_keeps_the_last_good_one(tmp_path: Path):
    path = tmp_path / "tasktypes.json"
    path.write_text(_document(a={"handler": "echo"}))
    watcher = RegistryWatcher(path, interval=0.05)
    assert list(watcher.current()) == ["a"]

    for bad in ['{"taskTypes": [', "[]", '{"taskTypes": [{"handler": "no name"}]}', '{"taskTypes": 5}']:
        path.write_text(bad)
        time.sleep(0.1)
        assert list(watcher.current()) == ["a"], bad
    assert watcher.reloads == 1

    path.write_text(_document(b={"handler": "echo"}))
    _wait_until(lambda: list(watcher.current()) == ["b"], timeout=2.0)


def test_a_ready_entry_with_an_invalid_schema_is_not_served_as_ready(tmp_path: Path):
    doc = json.loads(_document(a={"handler": "echo"}))
    doc["taskTypes"][0]["payloadSchema"] = {"type": 12}
    path = tmp_path / "tasktypes.json"
    path.write_text(json.dumps(doc))
    registry = load(path)
    assert registry["a"].ready is False and registry["a"].reason == "InvalidSchema"
    assert registry.enabled() == []


def test_the_yaml_directory_follows_edits_adds_and_deletes(tmp_path: Path):
    types = TaskTypeDir(tmp_path / "types")
    types.apply("a", handler="echo")
    watcher = RegistryWatcher(types.path, interval=0.05)
    assert list(watcher.current()) == ["a"]
    types.apply("b", handler="echo", paused=True)
    _wait_until(lambda: "b" in watcher.current(), timeout=2.0)
    assert watcher.current()["b"].paused
    types.delete("a")
    _wait_until(lambda: list(watcher.current()) == ["b"], timeout=2.0)
