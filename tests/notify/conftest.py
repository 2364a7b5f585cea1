from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conveyor.clock import FakeClock
from conveyor.engine import Submission
from conveyor.memory import MemoryBroker, MemoryTaskStore
from conveyor.model import Task
from tests.conftest import WorkerThread, make_settings, wait_for
from tests.support.engines import memory_engine

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()

TYPE = """
apiVersion: conveyor.dev/v1alpha1
kind: TaskType
metadata: {{name: {name}}}
spec:
  handler: echo
  maxAttempts: 1
  notify: {notify}
"""


class Receiver:
    """A real HTTP server on loopback that records each request and answers with the
    next of ``codes`` (the last one repeats)."""

    def __init__(self) -> None:
        self.codes = [200]
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                code = receiver.codes[min(len(receiver.requests), len(receiver.codes)) - 1]
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class World:
    """A worker on the memory adapters and a fake clock (started at the real time, so a
    signature's timestamp passes the receiver's 5-minute check)."""

    def __init__(self, tmp: Path, receiver: Receiver, secrets: dict[str, str]) -> None:
        types = tmp / "tasktypes"
        types.mkdir()
        hook = receiver.url
        for name, notify in {
            "private-ok": {"url": hook, "allowPrivateNetworks": True},
            "public-only": {"url": hook.replace("http://", "https://")},
            "no-hook": None,
        }.items():
            (types / f"{name}.yaml").write_text(TYPE.format(name=name, notify=json.dumps(notify)))
        secrets_dir = tmp / "webhooks"
        secrets_dir.mkdir()
        for file, text in secrets.items():
            (secrets_dir / file).write_text(text + "\n")
        self.clock = FakeClock(datetime.now(UTC))
        self.settings = make_settings(
            tasktypes=str(types),
            poll_wait_seconds=0.2,
            heartbeat_seconds=0.05,
            shutdown_grace_seconds=5.0,
            webhook_secrets_dir=str(secrets_dir),
            webhook_timeout_seconds=2.0,
        )
        self.engine = memory_engine(
            self.settings, types, self.clock, visibility_timeout=self.settings.visibility_timeout
        )
        self.broker: MemoryBroker = self.engine.broker  # type: ignore[assignment]
        self.store: MemoryTaskStore = self.engine.store  # type: ignore[assignment]
        self.workers: list[WorkerThread] = []

    def start(self) -> WorkerThread:
        w = WorkerThread(SimpleNamespace(engine=self.engine, blobs=None), delete_gather_seconds=0.02)  # type: ignore[arg-type]
        self.workers.append(w.start())
        return w

    def submit(self, task_type: str, payload: Any = None, **kw: Any) -> Task:
        task, created = self.engine.submit(Submission(task_type, payload or {"n": 1}, **kw))
        assert created
        return task

    def get(self, task_id: str) -> Task:
        return self.engine.get(task_id)

    def until(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        return wait_for(predicate, timeout=timeout, interval=0.01)

    def settle(self, predicate: Callable[[], Any] = lambda: True, messages: int | None = None) -> Any:
        """``predicate`` holds, no worker holds a message and (given) the queue holds
        ``messages`` (batched deletes done): safe to move the clock."""
        return self.until(
            lambda: (
                all(w.worker.in_hand == 0 for w in self.workers)
                and (messages is None or self.broker.depth().total == messages)
                and predicate()
            )
        )

    def stop(self) -> None:
        for w in self.workers:
            if w.thread.is_alive():
                w.stop()


@pytest.fixture
def make_world(tmp_path: Path, receiver: Receiver) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(secrets: dict[str, str] | None = None) -> World:
        sub = tmp_path / f"w{len(made)}"
        sub.mkdir()
        made.append(World(sub, receiver, {"type.private-ok": SECRET} if secrets is None else secrets))
        return made[-1]

    yield make
    for world in made:
        world.stop()
