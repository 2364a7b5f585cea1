"""Handlers report progress and events: throttled, owner-only writes, shown by GET."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from conveyor.clock import SYSTEM
from conveyor.memory import MemoryTaskStore
from conveyor.model import MAX_EVENTS, Progress, Status, Task, TaskError, new_id, now
from tests.conftest import AUTH_HEADERS
from tests.live.conftest import CountingStore
from worker.progress import Reporter


def _claimed(store: MemoryTaskStore) -> Task:
    task = Task(id=new_id(), type="live-steps", payload={})
    store.create(task)
    claimed = store.claim(task.id, task.type, "w1", now()).task
    assert claimed is not None
    return claimed


async def _io(fn, *args):
    return await asyncio.to_thread(fn, *args)


async def test_a_tight_loop_of_progress_calls_writes_at_most_once_per_interval_and_the_last_value():
    store = CountingStore()
    task = _claimed(store)
    interval, seconds = 0.2, 1.0
    reporter = Reporter(store, task, SYSTEM, interval=interval)
    reporter.start(_io)
    calls = 0

    def handler() -> None:  # a sync handler, in a thread, as the worker runs one
        nonlocal calls
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            calls += 1
            reporter.progress(min(calls / 1e7, 0.5), "working")
        reporter.event("last", {"calls": calls})
        reporter.progress(1.0, "done")

    started = time.monotonic()
    await asyncio.to_thread(handler)
    await reporter.close(_io)
    took = time.monotonic() - started
    writes = store.calls["record_progress"]
    assert calls > 1000  # it really was a tight loop
    # One write at once, then at most one per interval, and the final one.
    assert 2 <= writes <= 1 + math.ceil(took / interval) + 1, (writes, took)
    stored = store.get(task.id)
    assert stored.progress.fraction == 1.0 and stored.progress.message == "done"
    assert [e.name for e in stored.events] == ["last"] and stored.events[0].seq == 1


async def test_events_are_numbered_bounded_and_continue_across_attempts():
    store = MemoryTaskStore()
    task = _claimed(store)
    reporter = Reporter(store, task, SYSTEM, interval=0.01)
    reporter.start(_io)
    for n in range(MAX_EVENTS + 5):
        reporter.event("e", {"n": n})
    await reporter.close(_io)
    events = store.get(task.id).events
    assert len(events) == MAX_EVENTS
    assert [e.seq for e in events] == list(range(6, MAX_EVENTS + 6))
    # The next attempt's reporter starts from the record the claim returned.
    assert store.requeue(task, now(), TaskError("E", "m"), now())
    again = store.claim(task.id, task.type, "w2", now()).task
    second = Reporter(store, again, SYSTEM, interval=0.01)
    second.start(_io)
    second.event("next")
    await second.close(_io)
    last = store.get(task.id).events[-1]
    assert last.seq == MAX_EVENTS + 6 and last.attempt == 2


async def test_a_stale_attempt_writes_nothing_and_stops_trying():
    store = CountingStore()
    task = _claimed(store)
    store.take_over(task, "w2", now())  # another worker owns the task now
    reporter = Reporter(store, task, SYSTEM, interval=0.01)
    reporter.start(_io)
    reporter.progress(0.5)
    await asyncio.sleep(0.1)
    reporter.progress(0.7)
    await reporter.close(_io)
    assert store.get(task.id).progress is None
    assert store.calls["record_progress"] == 1 and not reporter.owned


@pytest.mark.parametrize(
    ("fraction", "message", "error"),
    [
        (1.5, None, ValueError),
        (-0.1, None, ValueError),
        (float("nan"), None, ValueError),
        ("half", None, TypeError),
        (True, None, TypeError),
        (0.5, 7, TypeError),
    ],
)
def test_bad_progress_is_refused_with_a_clear_error(fraction, message, error):
    with pytest.raises(error, match="progress"):
        Progress.checked(fraction, message, 1, now())


def test_bad_events_are_refused_and_long_messages_cut():
    store = MemoryTaskStore()
    reporter = Reporter(store, _claimed(store), SYSTEM)
    with pytest.raises(ValueError, match="event name"):
        reporter.event("")
    with pytest.raises(TypeError, match="JSON"):
        reporter.event("x", {"a": object()})
    with pytest.raises(ValueError, match="at most 1024"):
        reporter.event("x", "y" * 2000)
    assert len(Progress.checked(0.1, "m" * 1000, 1, now()).message) == 256


def test_sync_and_async_handlers_report_through_the_worker_and_get_shows_it(memory):
    from api.app import create_app

    memory.start_worker()
    sync = memory.submit("live-steps", {"seconds": 0.3, "every": 1000})
    async_ = memory.submit("live-async", {"n": 4})
    done_sync, done_async = memory.finished(sync.id), memory.finished(async_.id)
    assert done_sync.status is done_async.status is Status.SUCCEEDED
    assert done_sync.progress.fraction == 1.0 and done_sync.progress.attempt == 1
    assert done_sync.events[-1].name == "done" and len(done_sync.events) <= MAX_EVENTS
    assert [e.data for e in done_async.events] == [{"i": i} for i in range(1, 5)]
    assert done_async.progress.message == "step 4 of 4"
    with TestClient(create_app(memory.engine, CollectorRegistry()), headers=AUTH_HEADERS) as api:
        shown = api.get(f"/v1/tasks/{async_.id}").json()
    assert shown["progress"]["fraction"] == 1.0 and shown["progress"]["message"] == "step 4 of 4"
    assert [e["seq"] for e in shown["events"]] == [1, 2, 3, 4]
    assert shown["events"][0]["name"] == "step" and shown["events"][0]["data"] == {"i": 1}


def test_progress_calls_from_a_thread_are_safe_under_contention():
    store = MemoryTaskStore()
    reporter = Reporter(store, _claimed(store), SYSTEM)

    def go() -> None:
        for _ in range(200):
            reporter.event("e")

    threads = [threading.Thread(target=go) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert reporter._seq == 800


async def test_the_last_value_wins_even_when_a_slow_write_is_in_flight_at_the_end():
    class SlowFirstWrite(MemoryTaskStore):
        def __init__(self) -> None:
            super().__init__()
            self.started = threading.Event()
            self.slow = True

        def record_progress(self, task, progress, events):
            if self.slow:
                self.slow = False
                self.started.set()
                time.sleep(0.3)  # the write lands after the handler has returned
            return super().record_progress(task, progress, events)

    store = SlowFirstWrite()
    task = _claimed(store)
    reporter = Reporter(store, task, SYSTEM, interval=0.01)
    reporter.start(_io)
    reporter.progress(0.5, "half")
    await asyncio.to_thread(store.started.wait, 5)
    reporter.progress(1.0, "done")
    await reporter.close(_io)
    await asyncio.sleep(0.4)  # anything still in flight has landed by now
    assert store.get(task.id).progress.message == "done"


async def test_a_reporter_never_used_starts_no_flusher_and_closes_from_any_thread():
    store = CountingStore()
    task = _claimed(store)
    quiet = Reporter(store, task, SYSTEM, interval=0.01)
    quiet.start(_io)
    await asyncio.sleep(0)
    # Most handlers never report: their attempts cost the loop no flusher task.
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("progress-")]
    assert await asyncio.to_thread(quiet.close_quiet)
    quiet.progress(0.5)  # after the close (a stray thread): dropped
    await asyncio.sleep(0.05)
    await quiet.close(_io)
    assert store.calls["record_progress"] == 0 and store.get(task.id).progress is None

    used = Reporter(store, task, SYSTEM, interval=0.01)
    used.start(_io)
    await asyncio.to_thread(used.progress, 0.25, "first")  # from a handler's thread
    await asyncio.sleep(0.05)
    assert [t for t in asyncio.all_tasks() if t.get_name() == f"progress-{task.id}"]
    assert store.get(task.id).progress.fraction == 0.25  # written at once, by the flusher
    # Reported: it must be closed on the loop, which writes the last value.
    used.progress(0.75)
    assert not used.close_quiet()
    await used.close(_io)
    assert store.get(task.id).progress.fraction == 0.75
