"""The console, end to end: the real app under uvicorn on loopback, a real worker, and
Debian's Chromium driven by Playwright. No browser means a failure, never a skip: CI
installs it with `make system-deps`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from conveyor.aws import AwsBackend
from conveyor.aws.provision import provision
from conveyor.bootstrap import Runtime, build
from conveyor.local import MotoServer
from tests.conftest import AUTH_HEADERS, ROOT, TEST_TOKEN, WorkerThread, make_settings
from tests.support.servers import ServerThread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "test-artifacts" / "console"
STATIC = ROOT / "api" / "static"


def documented_operations(openapi: dict[str, Any]) -> list[tuple[str, re.Pattern[str], set[str]]]:
    """(method, path pattern, query parameter names) for every operation in /openapi.json."""
    ops = []
    for template, item in openapi["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
        for method, op in item.items():
            query = {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}
            ops.append((method.upper(), pattern, query))
    return ops


def undocumented(
    requests: list[tuple[str, str]], openapi: dict[str, Any], origin: str, static: set[str]
) -> list[str]:
    """The page's requests that are neither a console file nor a documented operation
    (method, path and query names), or that leave the page's origin."""
    ops = documented_operations(openapi)
    bad = []
    for method, url in requests:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob"):
            continue
        if f"{parts.scheme}://{parts.netloc}" != origin:
            bad.append(f"{method} {url} (another origin)")
            continue
        path = parts.path
        if method == "GET" and path in static and not parts.query:
            continue
        names = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
        if not any(m == method and p.match(path) and names <= q for m, p, q in ops):
            bad.append(f"{method} {path}{'?' + parts.query if parts.query else ''}")
    return bad


def static_paths() -> set[str]:
    files = {"/" + p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file()}
    return files | {"/"}


@dataclass
class Console:
    """One test's view of the system: the page, the server's URL, an HTTP client for
    setting up data the way any API client would, and screenshots by step."""

    page: Any
    url: str
    http: httpx.Client
    test_name: str
    requests: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    shots: int = 0
    openapi: dict[str, Any] = field(default_factory=dict)

    def open(self, route: str = "#/overview") -> None:
        self.page.goto(f"{self.url}/{route}")

    def shot(self, step: str) -> Path:
        self.shots += 1
        path = ARTIFACTS / f"{self.test_name}-{self.shots:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def submit(self, task_type: str, payload: Any, **extra: Any) -> dict[str, Any]:
        r = self.http.post("/v1/tasks", json={"type": task_type, "payload": payload, **extra})
        assert r.status_code == 202, r.text
        return dict(r.json())

    def task(self, task_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/tasks/{task_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_status(self, task_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if task["status"] in statuses:
                return task
            assert time.monotonic() < deadline, f"task {task_id} is {task['status']}, wanted {statuses}"
            time.sleep(0.1)


# Package scope, not session: Playwright's sync API keeps an event loop running on the main
# thread while it is open, and pytest-asyncio tests after it would fail to start their own.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (the console tests need a real browser)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def make_server(runtime: Runtime) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def make(app: Starlette | None = None) -> ServerThread:
        from api.app import create_app

        server = ServerThread(app or create_app(runtime.engine, CollectorRegistry())).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def console_factory(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Console]]:
    """Open a page on a server; at teardown, fail on any page error and on any request the
    page made that is not a console file or a documented operation."""
    opened: list[tuple[Console, Any, str]] = []

    def make(
        server: ServerThread, width: int = 1280, height: int = 900, token: str | None = TEST_TOKEN
    ) -> Console:
        context = browser.new_context(viewport={"width": width, "height": height}, locale="en-GB")
        if token:
            # As if the user had entered it in the prompt (tested in test_auth.py).
            context.add_init_script(f"sessionStorage.setItem('conveyor.token', {json.dumps(token)})")
        page = context.new_page()
        page.set_default_timeout(10_000)
        http = httpx.Client(base_url=server.url, timeout=10, headers=AUTH_HEADERS)
        console = Console(page, server.url, http, request.node.name.replace("[", "-").rstrip("]"))
        console.openapi = http.get("/openapi.json").json()
        context.on("request", lambda r: console.requests.append((r.method, r.url)))
        page.on("pageerror", lambda exc: console.page_errors.append(str(exc)))
        # Console errors too (a CSP violation is one), except Chromium's line for each
        # 4xx answer, which the tests provoke on purpose.
        page.on(
            "console",
            lambda m: (
                console.page_errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        opened.append((console, context, server.url))
        return console

    yield make
    problems = []
    for console, context, origin in opened:
        context.close()
        console.http.close()
        problems += [f"page error: {e}" for e in console.page_errors]
        problems += [
            f"undocumented request: {r}"
            for r in undocumented(console.requests, console.openapi, origin, static_paths())
        ]
    assert not problems, "\n".join(problems)


@pytest.fixture
def console(
    make_server: Callable[..., ServerThread],
    console_factory: Callable[..., Console],
    start_worker: Callable[..., WorkerThread],
) -> Console:
    """A system of its own (API under uvicorn, one worker, fresh queue and table) and a
    1280 px page on it: for tests that count everything they see."""
    start_worker()
    return console_factory(make_server())


@pytest.fixture(scope="module")
def shared_server(moto_server: MotoServer) -> Iterator[ServerThread]:
    """One system for a module's tests that look only at their own tasks: provisioning
    a table and queues costs about a second per test."""
    from api.app import create_app

    settings = make_settings()
    provision(AwsBackend(settings))
    runtime = build(settings)
    worker = WorkerThread(runtime).start()
    server = ServerThread(create_app(runtime.engine, CollectorRegistry())).start()
    yield server
    server.stop()
    worker.stop()


@pytest.fixture
def own_tasks_console(shared_server: ServerThread, console_factory: Callable[..., Console]) -> Console:
    """A 1280 px page on the module's shared system."""
    return console_factory(shared_server)


# TaskSchedules for the schedules pages and CLI: one ready, one suspended, two the loader
# must refuse (an hour of 25; markup-like brackets, shown as text), one with a long name
# and zone (layout).
SCHEDULES_YAML = """\
apiVersion: conveyor.dev/v1alpha1
kind: TaskSchedule
metadata: {name: nightly-report}
spec:
  taskType: echo
  payload: {report: nightly}
  schedule: "0 2 * * *"
  timeZone: Europe/Paris
---
apiVersion: conveyor.dev/v1alpha1
kind: TaskSchedule
metadata: {name: paused-cleanup}
spec:
  taskType: echo
  payload: {}
  schedule: "*/5 * * * *"
  suspend: true
---
apiVersion: conveyor.dev/v1alpha1
kind: TaskSchedule
metadata: {name: broken-cron}
spec:
  taskType: echo
  payload: {}
  schedule: "0 25 * * *"
---
apiVersion: conveyor.dev/v1alpha1
kind: TaskSchedule
metadata: {name: bracket-cron}
spec:
  taskType: echo
  payload: {}
  schedule: "0 2 [/] [b]x *"
---
apiVersion: conveyor.dev/v1alpha1
kind: TaskSchedule
metadata: {name: a-rather-long-schedule-name-for-the-narrow-layout-of-the-console-0123456789}
spec:
  taskType: text-transform
  payload: {text: hello}
  schedule: "30 8 * * 1-5"
  timeZone: America/Argentina/Buenos_Aires
"""


def schedules_registry(directory: Path) -> Path:
    """A registry directory as `make run` reads one: the example TaskTypes and the
    TaskSchedules above, as YAML manifests."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in (ROOT / "k8s" / "examples").glob("*.yaml"):
        if "kind: TaskType\n" in path.read_text():
            (directory / path.name).write_text(path.read_text())
    (directory / "schedules.yaml").write_text(SCHEDULES_YAML)
    return directory


@dataclass
class System:
    server: ServerThread
    runtime: Runtime


@pytest.fixture(scope="module")
def schedules_system(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system (API and one worker) whose registry holds SCHEDULES_YAML. The API runs
    without its lifespan, so no slot fires by itself: every task seen was triggered."""
    from api.app import create_app

    registry = schedules_registry(tmp_path_factory.mktemp("schedules"))
    settings = make_settings(tasktypes=str(registry))
    provision(AwsBackend(settings))
    runtime = build(settings)
    worker = WorkerThread(runtime).start()
    server = ServerThread(create_app(runtime.engine, CollectorRegistry())).start()
    yield System(server, runtime)
    server.stop()
    worker.stop()
