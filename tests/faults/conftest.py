"""Fault tests: real API and worker processes reaching moto through a fault proxy.

The test itself reads results straight from moto (``runtime``), never through the proxy,
so injected faults never blur what is checked.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.bootstrap import Runtime, build
from conveyor.local import MotoServer
from conveyor.settings import Settings
from tests.conftest import EXAMPLES
from tests.faults.proxy import FaultProxy

FAULT_TYPE = """
apiVersion: conveyor.dev/v1alpha1
kind: TaskType
metadata: {name: fault-count}
spec:
  handler: fault-count
  maxAttempts: 10
  backoff: {initialSeconds: 0.2, maxSeconds: 1}
  timeoutSeconds: 60
"""


@pytest.fixture
def fault_settings(settings_factory: Callable[..., Settings], tmp_path: Path) -> Callable[..., Settings]:
    """Fresh AWS resources, the example TaskTypes plus ``fault-count`` (10 attempts)."""
    target = tmp_path / "tasktypes"
    shutil.copytree(EXAMPLES, target)
    (target / "fault-count.yaml").write_text(textwrap.dedent(FAULT_TYPE))

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "tasktypes": str(target),
            "redispatch_after_seconds": 4,  # the sweeper's horizon: orphans re-sent within seconds
            "rate_limit": "off",
        }
        return settings_factory(**(values | overrides))

    return make


@pytest.fixture
def settings(fault_settings: Callable[..., Settings]) -> Settings:
    return fault_settings()


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    return build(settings)


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_server.url).start()
    yield p
    p.stop()
