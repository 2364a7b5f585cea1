"""TaskType YAML in a tmp dir per test, edited live while API and workers run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import tests.registry.handlers  # noqa: F401  (registers the test handler)
from conveyor.settings import Settings


class TaskTypeDir:
    """A directory of TaskType manifests, as `make run` reads them (CONVEYOR_TASKTYPES)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def apply(self, name: str, **spec: Any) -> None:
        doc = {
            "apiVersion": "conveyor.dev/v1alpha1",
            "kind": "TaskType",
            "metadata": {"name": name},
            "spec": spec,
        }
        target = self.path / f"{name}.yaml"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc))
        tmp.replace(target)  # atomic, like kubectl apply is for the API server

    def delete(self, name: str) -> None:
        (self.path / f"{name}.yaml").unlink()


@pytest.fixture
def tasktypes(tmp_path: Path) -> TaskTypeDir:
    types = TaskTypeDir(tmp_path / "tasktypes")
    types.apply("echo", handler="echo", maxAttempts=1, timeoutSeconds=30)
    return types


@pytest.fixture
def settings(settings_factory: Callable[..., Settings], tasktypes: TaskTypeDir) -> Settings:
    # hold_seconds=1: a paused type's message is looked at again every second, not every 30.
    return settings_factory(tasktypes=str(tasktypes.path), hold_seconds=1)
