"""?wait and the event stream, on the memory adapters: the API under uvicorn where a
stream must be read while it is open, the TestClient elsewhere."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from api.app import create_app
from conveyor.client import Client
from conveyor.model import Progress, Status, TaskEvent, now
from tests.conftest import AUTH_HEADERS, TEST_TOKEN


def _app(memory, interval: float = 0.05):
    app = create_app(memory.engine, CollectorRegistry())
    app.state.conveyor.watcher.interval = interval
    return app


def _claimed(memory):
    """A task claimed by a pretend worker: the test moves it by writing to the store."""
    task = memory.submit("live-gate", {"path": "/nonexistent"})
    return memory.store.claim(task.id, task.type, "w-test", now()).task


def test_wait_answers_when_the_task_ends(memory, tmp_path: Path):
    gate = tmp_path / "gate"
    memory.start_worker()
    task = memory.submit("live-gate", {"path": str(gate)})
    with TestClient(_app(memory), headers=AUTH_HEADERS) as api:
        threading.Timer(0.5, gate.write_text, ["done"]).start()
        started = time.monotonic()
        answer = api.get(f"/v1/tasks/{task.id}", params={"wait": 20})
        took = time.monotonic() - started
    assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
    assert 0.4 < took < 5


def test_wait_gives_up_after_n_seconds_with_the_task_as_it_stands(memory):
    task = _claimed(memory)
    with TestClient(_app(memory), headers=AUTH_HEADERS) as api:
        started = time.monotonic()
        answer = api.get(f"/v1/tasks/{task.id}", params={"wait": "0.4"})
        assert 0.35 < time.monotonic() - started < 3
        assert answer.json()["status"] == "running"
        assert api.app.state.conveyor.watcher.watched == 0  # the subscription ended with it


@pytest.mark.parametrize("bad", ["abc", "-1", "61", "nan", "inf", "1e400"])
def test_a_bad_wait_is_a_problem_naming_the_parameter(memory, bad):
    task = memory.submit("live-async")
    with TestClient(_app(memory), headers=AUTH_HEADERS) as api:
        answer = api.get(f"/v1/tasks/{task.id}", params={"wait": bad})
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"][0]["pointer"] == "/query/wait"


def test_the_stream_follows_a_task_to_its_end_and_resumes_from_last_event_id(memory, serve):
    memory.start_worker()
    with serve(_app(memory)) as server, Client(server.url, TEST_TOKEN) as client:
        task = memory.submit("live-async", {"n": 3, "pause": 0.1})
        seen = list(client.events(task.id))
        kinds = [e.kind for e in seen]
        assert kinds[0] == "state" and kinds[-1] == "state" and seen[-1].status == "succeeded"
        assert [e.data["data"] for e in seen if e.kind == "event"] == [{"i": 1}, {"i": 2}, {"i": 3}]
        assert [e.data["seq"] for e in seen if e.kind == "event"] == [1, 2, 3]
        assert seen[-2].kind == "progress" and seen[-2].data["fraction"] == 1.0
        assert all(e.id and e.status for e in seen)
        # Resumed from the middle: exactly what came after, nothing repeated.
        middle = next(i for i, e in enumerate(seen) if e.kind == "event")
        rest = list(client.events(task.id, last_event_id=seen[middle].id))
        assert [(e.kind, e.data.get("seq")) for e in rest][-1] == ("state", None)
        assert [e.data["seq"] for e in rest if e.kind == "event"] == [2, 3]
        # Resumed after the end: 204, which tells an EventSource to stop reconnecting.
        done = httpx.get(
            f"{server.url}/v1/tasks/{task.id}/events",
            headers={**AUTH_HEADERS, "Last-Event-ID": seen[-1].id},
        )
        assert done.status_code == 204


def test_a_bad_last_event_id_or_task_id_is_a_problem(memory):
    task = memory.submit("live-async")
    with TestClient(_app(memory), headers=AUTH_HEADERS) as api:
        bad = api.get(f"/v1/tasks/{task.id}/events", headers={"Last-Event-ID": "../etc"})
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["pointer"] == "/headers/Last-Event-ID"
        assert api.get("/v1/tasks/nope/events").status_code == 400
        missing = api.get("/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV/events")
        assert missing.status_code == 404 and missing.json()["status"] == 404


def test_reads_do_not_grow_with_clients_and_every_client_sees_each_change(memory, serve):
    """One task, 1 then 50 connected clients: the watcher reads the store the same number
    of times per second, and a change reaches every client."""
    task = _claimed(memory)
    app = _app(memory, interval=0.5)
    watcher = app.state.conveyor.watcher
    window = 2.0

    def reads_per_second(clients: int) -> tuple[float, int]:
        received = [0] * clients
        stop = threading.Event()

        def follow(n: int) -> None:
            with Client(server.url, TEST_TOKEN) as client:
                for event in client.events(task.id):
                    if event.kind == "progress":
                        received[n] += 1
                    if stop.is_set():
                        return

        threads = [threading.Thread(target=follow, args=(n,), daemon=True) for n in range(clients)]
        [t.start() for t in threads]
        deadline = time.monotonic() + 20
        while watcher.subscribers < clients:
            assert time.monotonic() < deadline, f"{watcher.subscribers} of {clients} connected"
            time.sleep(0.05)
        before, started = memory.store.calls["get_many"], time.monotonic()
        time.sleep(window)
        rate = (memory.store.calls["get_many"] - before) / (time.monotonic() - started)
        stop.set()
        memory.store.record_progress(task, Progress.checked(len(threads) / 100, None, 1, now()), [])
        while any(r == 0 for r in received) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(received), f"{received.count(0)} client(s) saw no change"
        [t.join(5) for t in threads]
        return rate, max(memory.store.batch_sizes[before:] or [0])

    with serve(app) as server:
        one, batch_one = reads_per_second(1)
        fifty, batch_fifty = reads_per_second(50)
    print(f"store reads/s: 1 client {one:.2f}, 50 clients {fifty:.2f}")
    assert 1.0 <= one <= 2.5 and 1.0 <= fifty <= 2.5  # every 0.5 s, whatever the clients
    assert abs(fifty - one) <= 0.7
    assert batch_one == batch_fifty == 1  # one id per read: the task, not one per client


def test_latency_from_a_change_to_the_client(memory, serve):
    """p50 from a store write to a connected client seeing it (watcher every 0.5 s)."""
    task = _claimed(memory)
    app = _app(memory, interval=0.5)
    delays: list[float] = []
    with serve(app) as server, Client(server.url, TEST_TOKEN) as client:
        events = client.events(task.id)
        assert next(events).kind == "state"
        for n in range(1, 9):
            time.sleep(0.13 * n % 0.5)  # changes at different phases of the poll
            written = time.monotonic()
            memory.store.record_progress(task, Progress.checked(n / 10, None, 1, now()), [])
            event = next(events)
            delays.append(time.monotonic() - written)
            assert event.kind == "progress" and event.data["fraction"] == n / 10
        events.close()
    p50 = statistics.median(delays)
    print(f"change to client: p50 {p50 * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms")
    assert p50 < 0.6 and max(delays) < 1.5


def test_a_metadata_token_streams_without_event_data_and_a_submit_token_is_refused(memory, tmp_path):
    from dataclasses import replace

    from conveyor import tokens

    made = {name: tokens.generate_token() for name in ("meta", "submit")}
    tokens.write_tokens_file(
        tmp_path / "tokens.json",
        tokens.TokenSet(
            [
                tokens.TokenEntry("meta", tokens.hash_token(made["meta"]), frozenset({tokens.READ_METADATA})),
                tokens.TokenEntry("submit", tokens.hash_token(made["submit"]), frozenset({tokens.SUBMIT})),
            ]
        ),
    )
    memory.engine.settings = replace(memory.settings, auth_tokens_file=str(tmp_path / "tokens.json"))
    task = _claimed(memory)
    event = TaskEvent.checked(1, "e", {"secret": 1}, 1, now())
    memory.store.record_progress(task, None, [event])
    memory.store.finish(task, Status.SUCCEEDED, now(), result={"secret": 2})
    with TestClient(_app(memory)) as api:
        refused = api.get(
            f"/v1/tasks/{task.id}/events", headers={"Authorization": f"Bearer {made['submit']}"}
        )
        assert refused.status_code == 403
        meta = {"Authorization": f"Bearer {made['meta']}"}
        body = api.get(f"/v1/tasks/{task.id}/events", headers=meta).text
        shown = api.get(f"/v1/tasks/{task.id}", headers=meta).json()
    assert "event: event" in body and "event: state" in body and "secret" not in body
    assert shown["events"][0]["name"] == "e" and "data" not in shown["events"][0]


def test_a_process_following_its_limit_refuses_more_with_503_and_frees_on_disconnect(memory, serve):
    task = _claimed(memory)
    app = _app(memory)
    watcher = app.state.conveyor.watcher
    watcher.max_subscribers = 1
    with serve(app) as server, Client(server.url, TEST_TOKEN) as client:
        events = client.events(task.id)
        assert next(events).kind == "state"  # one follower: the process is full
        for path, params in ((f"/v1/tasks/{task.id}/events", {}), (f"/v1/tasks/{task.id}", {"wait": 5})):
            refused = httpx.get(server.url + path, params=params, headers=AUTH_HEADERS)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
            assert refused.headers["content-type"] == "application/problem+json"
        assert httpx.get(f"{server.url}/v1/tasks/{task.id}", headers=AUTH_HEADERS).status_code == 200
        events.close()  # the client goes away: its subscription ends with the connection
        deadline = time.monotonic() + 5
        while watcher.subscribers:
            assert time.monotonic() < deadline, "a closed stream kept its subscription"
            time.sleep(0.05)
        answer = httpx.get(f"{server.url}/v1/tasks/{task.id}", params={"wait": 0.1}, headers=AUTH_HEADERS)
        assert answer.status_code == 200
