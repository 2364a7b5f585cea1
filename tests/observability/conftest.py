from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tests.observability.handlers  # noqa: F401  (registers the handlers)
from conveyor import tracing
from conveyor.memory import MemoryBroker
from tests.conftest import WorkerThread, make_settings
from tests.support.engines import memory_engine

TYPES = {
    # name: (handler, max attempts)
    "obs-probe": ("obs-probe", 1),
    "obs-flaky": ("obs-probe", 2),
}


@pytest.fixture
def tasktypes(tmp_path: Path) -> Path:
    target = tmp_path / "tasktypes"
    target.mkdir()
    for name, (handler, attempts) in TYPES.items():
        (target / f"{name}.yaml").write_text(
            textwrap.dedent(f"""\
                apiVersion: conveyor.dev/v1alpha1
                kind: TaskType
                metadata: {{name: {name}}}
                spec:
                  handler: {handler}
                  maxAttempts: {attempts}
                  backoff: {{initialSeconds: 0, maxSeconds: 0}}
                  timeoutSeconds: 10
                """)
        )
    return target


class World:
    """An engine and a worker on the memory adapters (real time: nothing here waits long)."""

    def __init__(self, tasktypes: Path) -> None:
        self.settings = make_settings(
            tasktypes=str(tasktypes), poll_wait_seconds=0.2, heartbeat_seconds=0.1, visibility_timeout=30
        )
        self.engine = memory_engine(
            self.settings, self.settings.tasktypes, visibility_timeout=self.settings.visibility_timeout
        )
        self.broker: MemoryBroker = self.engine.broker  # type: ignore[assignment]
        self.worker: WorkerThread | None = None

    def start(self) -> WorkerThread:
        runtime: Any = SimpleNamespace(engine=self.engine, blobs=None)
        self.worker = WorkerThread(runtime, delete_gather_seconds=0.01).start()
        return self.worker

    def stop(self) -> None:
        if self.worker is not None and self.worker.thread.is_alive():
            self.worker.stop()


@pytest.fixture
def world(tasktypes: Path) -> Iterator[World]:
    w = World(tasktypes)
    yield w
    w.stop()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, into memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)
    provider.shutdown()
