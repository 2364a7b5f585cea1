"""The console follows tasks live: the task page and the list take server-sent events
(GET /v1/tasks/{id}/events, GET /v1/events) through the session cookie, never polling.
Memory adapters, a real worker loop and the API under uvicorn; Debian's Chromium."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect
from prometheus_client import CollectorRegistry

from api.app import create_app
from tests.console.conftest import Console, ServerThread
from tests.live.conftest import Memory


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[tuple[Memory, ServerThread]]:
    memory = Memory(tmp_path)
    memory.start_worker()
    app = create_app(memory.engine, CollectorRegistry())
    app.state.conveyor.watcher.interval = 0.1
    app.state.conveyor.feed.interval = 0.1
    server = ServerThread(app).start()
    yield memory, server
    server.stop()
    for worker in memory.workers:
        worker.stop()


def _gets(console: Console, path: str | re.Pattern[str]) -> list[str]:
    """The page's GETs of ``path`` (exactly, or matching the pattern), query included."""
    out = []
    for method, url in console.requests:
        got = urlsplit(url).path
        if method == "GET" and (got == path if isinstance(path, str) else path.fullmatch(got)):
            out.append(url)
    return out


def test_the_task_page_shows_progress_moving_and_the_end_without_polling(
    live_server: tuple[Memory, ServerThread], console_factory: Callable[..., Console], tmp_path: Path
) -> None:
    memory, server = live_server
    gate = tmp_path / "gate"
    task = memory.submit("live-gate", {"path": str(gate)})
    console = console_factory(server)
    page = console.page
    console.open(f"#/tasks/{task.id}")
    expect(page.locator(".head-status .badge")).to_have_text("Running")
    bar = page.locator(".progress-panel progress")
    seen: list[Any] = []
    for fraction in ("0.25", "0.6", "0.9"):
        gate.write_text(fraction)
        expect(bar).to_have_attribute("value", str(round(float(fraction) * 100)))
        expect(page.locator("[data-field=progress-message]")).to_have_text(f"at {fraction}")
        seen.append(bar.get_attribute("value"))
        if fraction == "0.6":
            console.shot("progress")
    assert seen == ["25", "60", "90"]
    gate.write_text("done")
    expect(page.locator(".head-status .badge")).to_have_text("Succeeded")
    expect(page.locator(".timeline [data-step=succeeded]")).to_have_class(re.compile(r"\bdone\b"))
    expect(page.locator(".progress-panel")).to_have_count(0)  # the bar is for a running task
    console.shot("succeeded")
    page.wait_for_timeout(500)  # anything still polling would show now

    # One read of the task, one event stream, no reload: nothing polled.
    assert len(_gets(console, f"/v1/tasks/{task.id}")) == 1, console.requests
    assert len(_gets(console, f"/v1/tasks/{task.id}/events")) == 1, console.requests
    assert _gets(console, "/") == [f"{server.url}/"]  # the page itself, loaded once
    assert [(m, urlsplit(u).path) for m, u in console.requests if m == "POST"] == [("POST", "/v1/session")]
    # The token never travels in a URL.
    assert not [u for _, u in console.requests if "token" in u.lower() or "bearer" in u.lower()]


def test_the_list_shows_new_tasks_and_their_states_without_polling(
    live_server: tuple[Memory, ServerThread], console_factory: Callable[..., Console], tmp_path: Path
) -> None:
    memory, server = live_server
    console = console_factory(server)
    page = console.page
    old = memory.submit("live-async", {"n": 1, "pause": 0.01})
    memory.finished(old.id)
    console.open("#/tasks")
    expect(page.locator(f"tr[data-task-id='{old.id}'] .badge")).to_have_text("Succeeded")
    page.wait_for_timeout(400)  # the feed has read the store once: the stream is live

    gate = tmp_path / "gate"
    task = memory.submit("live-gate", {"path": str(gate)})
    row = page.locator(f"tr[data-task-id='{task.id}']")
    expect(row.locator(".badge")).to_have_text("Running")
    assert page.locator("tbody tr").first.get_attribute("data-task-id") == task.id  # on top
    gate.write_text("done")
    expect(row.locator(".badge")).to_have_text("Succeeded")
    console.shot("list")
    page.wait_for_timeout(500)

    assert len(_gets(console, "/v1/tasks")) == 1, console.requests
    assert len(_gets(console, "/v1/events")) == 1, console.requests
    assert not _gets(console, re.compile(r"/v1/tasks/[0-9A-Z]{26}"))
