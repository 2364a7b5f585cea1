"""Shared fixtures: one real moto server per session (its own process, real HTTP), and
fresh AWS resources per test so queues stay shallow and tests never see each other."""

from __future__ import annotations

import asyncio
import atexit
import functools
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import botocore.loaders
import botocore.session
import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from conveyor import tokens
from conveyor.aws import AwsBackend
from conveyor.aws.provision import provision
from conveyor.bootstrap import Runtime, build
from conveyor.local import MotoServer
from conveyor.metrics import WorkerMetrics
from conveyor.settings import Settings

# Every test builds its own AwsBackend (a boto3 session and clients) for its own queue and
# table; each new botocore session re-reads and re-parses the same service-model JSON (about
# 0.1 s of CPU per backend, twice per test). One loader per data path for the whole process
# serves the same models from memory; clients, sessions and credentials stay per test.
botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "k8s" / "examples"
_names = itertools.count()

# Auth is on by default, in tests too: every test's settings name a tokens file holding
# one all-scopes token, which the `api` fixture, the CLI and the Client send.
TEST_TOKEN = tokens.generate_token()
_AUTH_DIR = Path(tempfile.mkdtemp(prefix="conveyor-test-auth-"))
atexit.register(shutil.rmtree, _AUTH_DIR, True)
TEST_TOKENS_FILE = _AUTH_DIR / "tokens.json"
tokens.write_tokens_file(
    TEST_TOKENS_FILE,
    tokens.TokenSet([tokens.TokenEntry("test", tokens.hash_token(TEST_TOKEN), frozenset(tokens.SCOPES))]),
)
tokens.write_private(_AUTH_DIR / "token", TEST_TOKEN + "\n")
AUTH_HEADERS = {"Authorization": f"Bearer {TEST_TOKEN}"}


@pytest.fixture(scope="session", autouse=True)
def _client_token() -> Iterator[None]:
    """The CLI and Client find the test token as they find `conveyor run`'s."""
    saved = os.environ.get("CONVEYOR_TOKEN_FILE")
    os.environ["CONVEYOR_TOKEN_FILE"] = str(_AUTH_DIR / "token")
    yield
    if saved is None:
        os.environ.pop("CONVEYOR_TOKEN_FILE", None)
    else:
        os.environ["CONVEYOR_TOKEN_FILE"] = saved


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer(log=None).start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


def make_settings(tmp: str | None = None, **overrides: Any) -> Settings:
    n = next(_names)
    prefix = f"t{os.getpid()}-{n}"
    base = Settings(
        queue=f"{prefix}-tasks",
        dlq=f"{prefix}-dlq",
        table=f"{prefix}-tasks",
        bucket=f"{prefix}-data",
        tasktypes=str(EXAMPLES),
        visibility_timeout=6,
        poll_wait_seconds=1,
        heartbeat_seconds=1.0,
        shutdown_grace_seconds=10.0,
        redispatch_after_seconds=300,
        stats_cache_seconds=0.0,
        max_receive_count=20,
        auth_tokens_file=str(TEST_TOKENS_FILE),
        # The examples hold a TaskSchedule; a test wanting its tasks turns firing on.
        scheduler_enabled=False,
    )
    return replace(base, **overrides)


@pytest.fixture
def settings_factory(moto_server: MotoServer) -> Callable[..., Settings]:
    """Provision a fresh queue/DLQ/table/bucket and return settings naming them."""

    def make(**overrides: Any) -> Settings:
        settings = make_settings(**overrides)
        provision(AwsBackend(settings))
        return settings

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    return build(settings)


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    from api.app import create_app

    with TestClient(
        create_app(runtime.engine, CollectorRegistry()), raise_server_exceptions=False, headers=AUTH_HEADERS
    ) as client:
        yield client


class WorkerThread:
    """A real worker loop on its own event loop in a thread, stoppable like SIGTERM."""

    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        from worker.runtime import Worker

        self.metrics_registry = CollectorRegistry()
        self.worker = Worker(
            runtime.engine, WorkerMetrics(self.metrics_registry), blob_factory=runtime.blobs, **kwargs
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.worker.run())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self.loop.call_soon_threadsafe(self.worker.request_stop)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error:
            raise self.error


@pytest.fixture
def start_worker(runtime: Runtime) -> Iterator[Callable[..., WorkerThread]]:
    started: list[WorkerThread] = []

    def start(rt: Runtime | None = None, **kwargs: Any) -> WorkerThread:
        w = WorkerThread(rt or runtime, **kwargs).start()
        started.append(w)
        return w

    yield start
    for w in started:
        if w.thread.is_alive():
            w.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def service_env(settings: Settings, handler_modules: str, **extra: str) -> dict[str, str]:
    """The environment of an api or worker process started by a test, from ``settings``."""
    env = {
        **os.environ,
        "CONVEYOR_QUEUE": settings.queue,
        "CONVEYOR_DLQ": settings.dlq,
        "CONVEYOR_TABLE": settings.table,
        "CONVEYOR_BUCKET": settings.bucket,
        "CONVEYOR_TASKTYPES": settings.tasktypes,
        "CONVEYOR_VISIBILITY_TIMEOUT": str(settings.visibility_timeout),
        "CONVEYOR_POLL_WAIT_SECONDS": str(settings.poll_wait_seconds),
        "CONVEYOR_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "CONVEYOR_SHUTDOWN_GRACE_SECONDS": str(settings.shutdown_grace_seconds),
        "CONVEYOR_REDISPATCH_AFTER_SECONDS": str(settings.redispatch_after_seconds),
        "CONVEYOR_STATS_CACHE_SECONDS": str(settings.stats_cache_seconds),
        "CONVEYOR_AUTH_ENABLED": str(settings.auth_enabled).lower(),
        "CONVEYOR_SCHEDULER_ENABLED": str(settings.scheduler_enabled).lower(),
        "CONVEYOR_AUTH_TOKENS_FILE": settings.auth_tokens_file,
        "CONVEYOR_RATE_LIMIT": settings.rate_limit,
        "CONVEYOR_WORKER_METRICS_PORT": "0",
        "CONVEYOR_HANDLER_MODULES": handler_modules,
        "PYTHONPATH": str(ROOT),
    }
    env.update(extra)
    return env
