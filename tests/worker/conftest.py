from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import tests.worker.testhandlers  # noqa: F401  (registers the test handlers)
from conveyor.bootstrap import Runtime, build
from conveyor.clock import FakeClock
from conveyor.engine import Submission
from conveyor.memory import MemoryBroker, MemoryTaskStore
from conveyor.model import Task
from conveyor.settings import Settings
from tests.conftest import EXAMPLES, WorkerThread, make_settings, wait_for
from tests.support.engines import memory_engine

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
        ("count-sync", "test-count-sync", 3, 60),
        ("count-once-sync", "test-count-sync", 1, 60),
        ("flaky", "test-flaky", 3, 30),
        ("slow-timeout", "test-count", 2, 1),
        ("block-timeout", "test-block", 1, 1),
        ("thread", "test-thread", 1, 60),
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


class Stub:
    """A worker on the memory adapters and a fake clock: delays, backoffs and dead
    owners come by ``clock.advance``, and ``broker.join()`` waits for the queue to empty
    without sleeping."""

    def __init__(self, default_types: Path, lanes: bool = False, **overrides: Any) -> None:
        self.clock = FakeClock()
        fast = {"poll_wait_seconds": 0.2, "heartbeat_seconds": 0.05, "shutdown_grace_seconds": 5.0}
        self.settings = make_settings(**{"tasktypes": str(default_types)} | fast | overrides)
        self.engine = memory_engine(
            self.settings,
            self.settings.tasktypes,
            self.clock,
            visibility_timeout=self.settings.visibility_timeout,
            lanes=lanes,
        )
        self.broker: MemoryBroker = self.engine.broker  # type: ignore[assignment]
        self.store: MemoryTaskStore = self.engine.store  # type: ignore[assignment]
        self.workers: list[WorkerThread] = []

    def start(self, **kwargs: Any) -> WorkerThread:
        kwargs.setdefault("delete_gather_seconds", 0.02)  # deletes are not what these tests wait on
        w = WorkerThread(SimpleNamespace(engine=self.engine, blobs=None), **kwargs).start()  # type: ignore[arg-type]
        self.workers.append(w)
        return w

    def submit(self, task_type: str, payload: Any, **kw: Any) -> Task:
        task, created = self.engine.submit(Submission(task_type, payload, **kw))
        assert created
        return task

    def get(self, task_id: str) -> Task:
        return self.engine.get(task_id)

    def until(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait (real time, short polls) for a state the worker reaches by itself."""
        return wait_for(predicate, timeout=timeout, interval=0.01)

    def settle(self, predicate: Callable[[], Any] = lambda: True, timeout: float = 10.0) -> Any:
        """Wait until ``predicate`` holds and no worker has a message in hand: what the
        worker does with a message (hide, resend, delete) is done before the clock moves."""
        return self.until(lambda: all(w.worker.in_hand == 0 for w in self.workers) and predicate(), timeout)

    def finished(self, task_id: str, timeout: float = 10.0) -> Task:
        return self.until(lambda: (t := self.get(task_id)).status.terminal and t, timeout)

    def stop(self) -> None:
        for w in self.workers:
            if w.thread.is_alive():
                w.stop()


@pytest.fixture
def stub(tasktypes: Path) -> Iterator[Stub]:
    world = Stub(tasktypes)
    yield world
    world.stop()


@pytest.fixture
def make_stub(tasktypes: Path) -> Iterator[Callable[..., Stub]]:
    made: list[Stub] = []

    def make(**overrides: Any) -> Stub:
        made.append(Stub(tasktypes, **overrides))
        return made[-1]

    yield make
    for world in made:
        world.stop()
