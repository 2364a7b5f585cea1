"""Live progress tests: an engine on the memory adapters, a real worker loop in a thread,
and the API under a real uvicorn server where streaming needs one."""

from __future__ import annotations

import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn

import tests.live.handlers  # noqa: F401  (registers the live test handlers)
from conveyor.engine import Submission
from conveyor.memory import MemoryBroker, MemoryTaskStore
from conveyor.model import Task
from tests.conftest import WorkerThread, make_settings
from tests.support.engines import memory_engine

TASKTYPE = """
apiVersion: conveyor.dev/v1alpha1
kind: TaskType
metadata: {{name: {name}}}
spec:
  handler: {name}
  maxAttempts: 1
  timeoutSeconds: 60
"""
TYPES = ("live-steps", "live-async", "live-gate", "live-markup")


def write_tasktypes(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in TYPES:
        (target / f"{name}.yaml").write_text(textwrap.dedent(TASKTYPE.format(name=name)))
    return target


class CountingStore(MemoryTaskStore):
    """The memory store, counting the calls the live features make."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {"get": 0, "get_many": 0, "record_progress": 0}
        self.batch_sizes: list[int] = []

    def get(self, task_id: str, consistent: bool = False) -> Task | None:
        self.calls["get"] += 1
        return super().get(task_id, consistent)

    def get_many(self, task_ids: Any) -> dict[str, Task]:
        self.calls["get_many"] += 1
        self.batch_sizes.append(len(task_ids))
        return super().get_many(task_ids)

    def record_progress(self, task: Task, progress: Any, events: Any) -> bool:
        self.calls["record_progress"] += 1
        return super().record_progress(task, progress, events)


class Memory:
    """An engine on the memory adapters; ``start_worker()`` runs a real worker loop."""

    def __init__(self, tmp: Path) -> None:
        self.settings = make_settings(
            tasktypes=str(write_tasktypes(tmp / "tasktypes")),
            poll_wait_seconds=1,
            heartbeat_seconds=0.2,
            maintenance_enabled=False,
        )
        self.store = CountingStore()
        self.engine = memory_engine(
            self.settings,
            self.settings.tasktypes,
            store=self.store,
            visibility_timeout=self.settings.visibility_timeout,
        )
        self.broker: MemoryBroker = self.engine.broker  # type: ignore[assignment]
        self.workers: list[WorkerThread] = []

    def start_worker(self) -> WorkerThread:
        worker = WorkerThread(SimpleNamespace(engine=self.engine, blobs=None)).start()  # type: ignore[arg-type]
        self.workers.append(worker)
        return worker

    def submit(self, task_type: str, payload: Any = None) -> Task:
        task, _ = self.engine.submit(Submission(task_type, payload or {}))
        return task

    def finished(self, task_id: str, timeout: float = 10.0) -> Task:
        deadline = time.monotonic() + timeout
        while True:
            task = self.engine.get(task_id)
            if task.status.terminal:
                return task
            assert time.monotonic() < deadline, f"task {task_id} still {task.status.value}"
            time.sleep(0.02)


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Memory]:
    system = Memory(tmp_path)
    yield system
    for worker in system.workers:
        if worker.thread.is_alive():
            worker.stop()


class Server:
    """uvicorn over an app, on a socket bound to 127.0.0.1 on a free port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def serve() -> Callable[[Any], Server]:
    return Server
