"""`conveyor watch` and `conveyor submit --wait` follow the event stream."""

from __future__ import annotations

import json
import threading

from click.testing import CliRunner

from conveyor.cli import main
from conveyor.model import Status, now
from tests.conftest import TEST_TOKEN
from tests.live.test_stream import _app, _claimed


def run(*args: str):
    return CliRunner().invoke(main, [*args, "--token", TEST_TOKEN], catch_exceptions=False)


def test_watch_shows_progress_and_events_then_prints_the_task(memory, serve):
    memory.start_worker()
    with serve(_app(memory)) as server:
        task = memory.submit("live-async", {"n": 3, "pause": 0.1})
        out = run("watch", task.id, "--url", server.url)
    assert out.exit_code == 0, out.output
    printed = json.loads(out.stdout)
    assert printed["status"] == "succeeded" and printed["result"] == {"steps": 3}
    assert 'event 1 step {"i":1}' in out.stderr and 'event 3 step {"i":3}' in out.stderr
    assert "100%" in out.stderr and "step 3 of 3" in out.stderr


def test_submit_wait_follows_the_stream_and_handler_text_is_not_markup(memory, serve):
    memory.start_worker()
    with serve(_app(memory)) as server:
        out = run("submit", "live-markup", "{}", "--wait", "--url", server.url)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["status"] == "succeeded"
    assert '"[/bold] [red]x"' in out.stderr


def test_watch_exits_2_when_the_task_does_not_succeed_and_1_on_timeout(memory, serve):
    task = _claimed(memory)
    with serve(_app(memory)) as server:
        slow = run("watch", task.id, "--url", server.url, "--timeout", "0.5")
        assert slow.exit_code == 1 and "still running after 0.5s" in slow.stderr
        threading.Timer(0.3, memory.store.finish, [task, Status.CANCELLED, now()]).start()
        out = run("watch", task.id, "--url", server.url)
    assert out.exit_code == 2 and json.loads(out.stdout)["status"] == "cancelled"


def test_watch_of_an_unknown_task_is_a_clear_error(memory, serve):
    with serve(_app(memory)) as server:
        out = run("watch", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--url", server.url)
    assert out.exit_code == 1 and "error 404" in out.stderr
