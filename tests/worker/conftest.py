from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import tests.worker.testhandlers  # noqa: F401  (registers the test handlers)
from conveyor.bootstrap import Runtime, build
from conveyor.settings import Settings
from tests.conftest import EXAMPLES

TEST_TYPES = """
apiVersion: conveyor.dev/v1alpha1
kind: TaskType
metadata: {{name: {name}}}
spec:
  handler: {handler}
  maxAttempts: {attempts}
  backoff: {{initialSeconds: 0.2, maxSeconds: 0.5}}
  timeoutSeconds: {timeout}
"""


@pytest.fixture
def tasktypes(tmp_path: Path) -> Path:
    """The example TaskTypes plus the test handlers' types."""
    target = tmp_path / "tasktypes"
    shutil.copytree(EXAMPLES, target)
    for name, handler, attempts, timeout in [
        ("count", "test-count", 3, 60),
        ("count-once", "test-count", 1, 60),
        ("flaky", "test-flaky", 3, 30),
        ("slow-timeout", "test-count", 2, 1),
        ("block-timeout", "test-block", 1, 1),
    ]:
        (target / f"{name}.yaml").write_text(
            textwrap.dedent(TEST_TYPES.format(name=name, handler=handler, attempts=attempts, timeout=timeout))
        )
    return target


@pytest.fixture
def settings(settings_factory: Callable[..., Settings], tasktypes: Path) -> Settings:
    return settings_factory(tasktypes=str(tasktypes))


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    return build(settings)
