"""Where the API finds the schedules: beside the TaskType registry.

In a cluster the operator writes every ``TaskSchedule`` (ready or not, with ``ready`` and
``reason``) into the registry ConfigMap under ``schedules.json``, next to
``tasktypes.json``, so the API reads both from the one mounted directory. Locally (no
``tasktypes.json`` there) the directory holds the example YAML, and the ``kind:
TaskSchedule`` documents in it are the schedules, in namespace ``default``, checked as
the operator checks them. The watcher re-reads on change as the TaskType one does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from conveyor.registry import REGISTRY_FILE
from conveyor.schedule import SCHEDULES_FILE, ScheduleSpec
from conveyor.watched import Watched, stat_signature

log = logging.getLogger("conveyor.schedules")

LOCAL_NAMESPACE = "default"


def _directory(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def _sources(path: Path) -> list[Path]:
    directory = _directory(path)
    if (directory / REGISTRY_FILE).exists() or (directory / SCHEDULES_FILE).exists():
        return [directory / SCHEDULES_FILE]
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def _unique(specs: list[ScheduleSpec]) -> list[ScheduleSpec]:
    seen: dict[str, ScheduleSpec] = {}
    for spec in specs:
        if spec.key in seen:
            log.error("schedule %s is defined twice; the first one is kept", spec.key)
            continue
        seen[spec.key] = spec
    return sorted(seen.values(), key=lambda s: s.key)


def from_document(doc: Any) -> list[ScheduleSpec]:
    """The schedules of a ``schedules.json`` document. A bad item is left out (and
    logged), so one schedule cannot take the others down."""
    if not isinstance(doc, dict) or not isinstance(doc.get("schedules", []), list):
        raise ValueError("not a schedules document: expected an object with a schedules list")
    specs = []
    for n, item in enumerate(doc.get("schedules", [])):
        try:
            specs.append(ScheduleSpec.from_json(item))
        except ValueError as exc:
            log.error("schedules.json item %d left out: %s", n, exc)
    return _unique(specs)


def load_manifests(paths: list[Path]) -> list[ScheduleSpec]:
    specs = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "TaskSchedule":
                continue
            try:
                specs.append(ScheduleSpec.from_manifest(doc, LOCAL_NAMESPACE))
            except (ValueError, TypeError, AttributeError) as exc:
                log.error("TaskSchedule in %s left out: %s", path, exc)
    return _unique(specs)


def load(path: str | Path) -> list[ScheduleSpec]:
    """The schedules beside the registry at ``path`` (its directory's ``schedules.json``,
    or the TaskSchedule YAML in a directory of manifests); [] when there are none."""
    sources = _sources(Path(path))
    if len(sources) == 1 and sources[0].name == SCHEDULES_FILE:
        if not sources[0].exists():
            return []
        return from_document(json.loads(sources[0].read_text()))
    return load_manifests(sources)


class ScheduleWatcher(Watched[list[ScheduleSpec]]):
    """Serves the current schedules, re-reading when their source changes (see
    ``conveyor.watched``). An unreadable source keeps the last good list."""

    def __init__(self, path: str | Path, interval: float = 1.0) -> None:
        self.path = Path(path)
        super().__init__(
            f"schedules at {self.path}",
            load=lambda: load(self.path),
            signature=lambda: stat_signature(_sources(self.path)),
            initial=[],
            log=log,
            errors=(OSError, ValueError, yaml.YAMLError),
            describe=lambda specs: ", ".join(s.key for s in specs),
            interval=interval,
        )
