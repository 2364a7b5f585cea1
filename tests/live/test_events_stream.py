"""GET /v1/events: one change feed per API process (conveyor/feed.py) on the memory
adapters; the API under uvicorn where a stream must be read while it is open."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from api.app import create_app
from api.auth import Authenticator
from api.ratelimit import RateLimiter
from conveyor import tokens
from conveyor.feed import ChangeFeed, Poll
from conveyor.model import Progress, Status, now
from tests.conftest import AUTH_HEADERS, wait_for

READ_TIMEOUT = httpx.Timeout(5.0, read=5.0)


def _app(memory: Any, auth: Authenticator | None = None, interval: float = 0.05) -> Any:
    app = create_app(memory.engine, CollectorRegistry(), auth=auth)
    app.state.conveyor.feed.interval = interval
    return app


def _until_following(*apps: Any) -> None:
    """Until each app's change feed has a subscriber and has taken its first look at the
    store: a change from then on reaches the stream (a fixed head start would not, on a
    loaded machine)."""
    feeds = [app.state.conveyor.feed for app in apps]
    wait_for(lambda: all(f.subscribers and f.poll.primed for f in feeds), timeout=10, interval=0.01)


def _events(
    client: httpx.Client,
    until: Any,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> list[tuple[str, str, dict[str, Any]]]:
    """(event, id, data) of /v1/events until ``until(collected)`` is true."""
    seen: list[tuple[str, str, dict[str, Any]]] = []
    with connect_sse(
        client, "GET", "/v1/events", params=params, headers=dict(headers or {}), timeout=READ_TIMEOUT
    ) as src:
        assert src.response.status_code == 200, src.response.read()
        for sse in src.iter_sse():
            seen.append((sse.event, sse.id, json.loads(sse.data)))
            if until(seen):
                return seen
    raise AssertionError(f"stream ended early: {seen}")


def _states(seen: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str]]:
    return [(d["id"], d["status"]) for e, _, d in seen if e == "state"]


# -- the poll, step by step ------------------------------------------------------------------


def test_a_poll_reports_creation_start_progress_and_end(memory):
    poll = Poll(memory.store)
    before = memory.submit("live-async")
    assert poll.run() == []  # the first poll only learns what is there
    task = memory.submit("live-async")
    assert [(k, t.id, t.status) for k, t in poll.run()] == [("state", task.id, Status.QUEUED)]
    claimed = memory.store.claim(task.id, task.type, "w", now()).task
    assert [(k, t.status) for k, t in poll.run()] == [("state", Status.RUNNING)]
    memory.store.record_progress(claimed, Progress(0.5, "half", claimed.attempts, now()), [])
    assert [(k, t.progress.fraction) for k, t in poll.run()] == [("progress", 0.5)]  # type: ignore[union-attr]
    assert poll.run() == []  # nothing moved
    memory.store.finish(claimed, Status.SUCCEEDED, now(), result={"ok": 1})
    memory.engine.cancel(before.id)
    moved = {t.id: (k, t.status) for k, t in poll.run()}
    assert moved == {task.id: ("state", Status.SUCCEEDED), before.id: ("state", Status.CANCELLED)}
    assert poll.known == {}  # finished tasks are not followed any more


def test_a_poll_costs_the_same_with_no_change_and_reads_only_what_moved(memory):
    poll = Poll(memory.store, newest=1)  # the oldest task is followed through the queued listing
    tasks = [memory.submit("live-async") for _ in range(5)]
    poll.run()
    reads = poll.reads
    poll.run()
    assert poll.reads - reads == 3  # the newest page, one queued page, one running page
    memory.engine.cancel(tasks[0].id)
    start = memory.store.calls["get_many"]
    poll.run()
    assert memory.store.calls["get_many"] - start == 1
    assert memory.store.batch_sizes[-1] == 1  # only the task that left the listings


def test_a_task_created_and_ended_between_two_polls_is_reported_once(memory):
    poll = Poll(memory.store)
    poll.run()
    task = memory.submit("live-async")
    memory.engine.cancel(task.id)  # queued, then cancelled: never seen queued by a poll
    assert [(kind, t.id, t.status) for kind, t in poll.run()] == [("state", task.id, Status.CANCELLED)]
    assert poll.run() == []  # still among the newest: not reported again


def test_the_feeds_store_reads_do_not_grow_with_subscribers(memory):
    """1 and 300 subscribers: the same reads per poll, and every subscriber gets the change."""

    async def run(subscribers: int) -> tuple[float, int]:
        feed = ChangeFeed(memory.store, interval=0.02)
        async with contextlib_stack(feed, subscribers) as subs:
            await asyncio.sleep(0.1)  # primed
            task = memory.submit("live-async")
            got = await asyncio.gather(*(s.changes(2.0) for s in subs))
            assert all(g and g[-1].task.id == task.id for g in got)
            await asyncio.sleep(0.2)
        return feed.poll.reads / feed.poll.polls, len(got)

    one = asyncio.run(run(1))
    many = asyncio.run(run(300))
    assert many[1] == 300
    assert abs(one[0] - many[0]) < 0.5  # ~2 requests a poll (plus one BatchGetItem on a move)


class contextlib_stack:
    """``subscribers`` subscriptions to ``feed`` at once."""

    def __init__(self, feed: ChangeFeed, subscribers: int) -> None:
        self.feed, self.n = feed, subscribers
        self.cms: list[Any] = []

    async def __aenter__(self) -> list[Any]:
        self.cms = [self.feed.subscribe() for _ in range(self.n)]
        return [await cm.__aenter__() for cm in self.cms]

    async def __aexit__(self, *exc: object) -> None:
        for cm in self.cms:
            await cm.__aexit__(None, None, None)


# -- over HTTP -----------------------------------------------------------------------------


@pytest.fixture
def scoped(tmp_path: Path) -> Iterator[tuple[Authenticator, dict[str, str]]]:
    """An authenticator over a tokens file with a full reader and a metadata-only reader."""
    plain = {"reader": tokens.generate_token(), "metadata": tokens.generate_token()}
    scopes = {"reader": {tokens.READ, tokens.SUBMIT}, "metadata": {tokens.READ_METADATA}}
    path = tmp_path / "tokens.json"
    entries = [tokens.TokenEntry(n, tokens.hash_token(plain[n]), frozenset(scopes[n])) for n in plain]
    tokens.write_tokens_file(path, tokens.TokenSet(entries))
    yield Authenticator(tokens.TokensWatcher(str(path)), RateLimiter("off")), plain


def test_state_changes_stream_with_filters(memory, serve):
    memory.start_worker()
    app = _app(memory)
    with serve(app) as server, httpx.Client(base_url=server.url, headers=AUTH_HEADERS) as http:
        wanted: list[str] = []

        def submit() -> None:
            _until_following(app)
            memory.submit("live-steps", {"seconds": 0.01})
            wanted.append(memory.submit("live-async", {"n": 1, "pause": 0.3}).id)

        threading.Thread(target=submit, daemon=True).start()
        seen = _events(http, lambda s: any(st == "succeeded" for _, st in _states(s)), {"type": "live-async"})
    assert {d["type"] for _, _, d in seen} == {"live-async"}
    assert [s for i, s in _states(seen) if i == wanted[0]][-1] == "succeeded"
    assert all(d["payload"] == {"n": 1, "pause": 0.3} for _, _, d in seen)


def test_a_status_filter_sends_only_that_status(memory, serve):
    memory.start_worker()
    app = _app(memory)
    with serve(app) as server, httpx.Client(base_url=server.url, headers=AUTH_HEADERS) as http:
        started = False

        def done(seen: list[Any]) -> bool:
            return bool(seen)

        def later() -> None:
            nonlocal started
            _until_following(app)
            started = True
            memory.submit("live-async", {"n": 2, "pause": 0.3})

        threading.Thread(target=later, daemon=True).start()
        seen = _events(http, done, params={"status": "succeeded"})
    assert started and [(e, d["status"]) for e, _, d in seen] == [("state", "succeeded")]


def test_a_metadata_token_gets_no_payload_or_result_and_the_cookie_opens_only_streams(memory, serve, scoped):
    auth, plain = scoped
    memory.start_worker()
    app = _app(memory, auth)
    with serve(app) as server, httpx.Client(base_url=server.url) as http:
        meta = {"Authorization": f"Bearer {plain['metadata']}"}
        assert http.get("/v1/events").status_code == 401
        session = http.post("/v1/session", headers=meta)
        assert session.status_code == 204
        cookie = session.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "max-age" in cookie
        assert "path=" not in cookie  # the browser's default: where /v1/session is, behind any prefix
        # The cookie alone opens the event stream, and nothing else.
        assert http.get("/v1/tasks").status_code == 401
        memory.submit("live-async", {"n": 1, "pause": 0.01})

        def later() -> None:
            _until_following(app)
            # Long enough for a poll to see it queued or running: a task that starts and
            # ends between two polls never shows in the feed (docs: the feed's gap).
            memory.submit("live-async", {"n": 1, "pause": 0.3})

        threading.Thread(target=later, daemon=True).start()
        seen = _events(http, lambda s: any(st == "succeeded" for _, st in _states(s)))
        finished = next(d for e, _, d in seen if e == "state" and d["status"] == "succeeded")
        assert "payload" not in finished and "result" not in finished
        assert finished["redacted"] == ["payload", "result"]
        assert http.delete("/v1/session").status_code == 204
        assert http.get("/v1/events", timeout=READ_TIMEOUT).status_code == 401


def test_a_bad_filter_or_resume_id_is_a_problem_naming_it(memory):
    with TestClient(_app(memory), headers=AUTH_HEADERS) as api:
        bad = api.get("/v1/events", params={"status": "done", "type": "x" * 129})
        assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
        assert {e["pointer"] for e in bad.json()["errors"]} == {"/query/status", "/query/type"}
        bad = api.get("/v1/events", headers={"Last-Event-ID": "12-not-an-id"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/headers/Last-Event-ID"


def test_resume_from_last_event_id_sends_what_was_missed_and_too_old_says_reset(memory, serve):
    app = _app(memory)
    with serve(app) as server, httpx.Client(base_url=server.url, headers=AUTH_HEADERS) as http:

        def submit_three() -> None:
            _until_following(app)
            for _ in range(3):
                memory.submit("live-async")
                time.sleep(0.08)

        threading.Thread(target=submit_three, daemon=True).start()
        first = _events(http, lambda s: len(s) == 3)
        assert len({d["id"] for _, _, d in first}) == 3
        # Reconnect after the first: the two others again, in order; nothing else.
        again = _events(http, lambda s: len(s) == 2, headers={"Last-Event-ID": first[0][1]})
        assert [i for _, i, _ in again] == [i for _, i, _ in first[1:]]
        # The same through the query (a new EventSource cannot set the header).
        again = _events(http, lambda s: len(s) == 2, params={"last_event_id": first[0][1]})
        assert [i for _, i, _ in again] == [i for _, i, _ in first[1:]]
        # An id from before what the feed keeps: the client is told to start over.
        old = f"1000-{first[0][2]['id']}"
        reset = _events(http, lambda s: len(s) == 1, headers={"Last-Event-ID": old})
        assert reset[0][0] == "reset"


def test_queued_tasks_pushed_past_the_tracked_window_are_read_once_not_every_poll(memory):
    poll = Poll(memory.store, tracked_queued=3, newest=3)
    for _ in range(3):
        memory.submit("live-async")
    poll.run()
    for _ in range(3):
        memory.submit("live-async")  # the first three leave the newest three
    assert len(poll.run()) == 3  # the three new ones
    poll.run()
    sizes = list(memory.store.batch_sizes)
    poll.run()
    poll.run()
    assert memory.store.batch_sizes == sizes  # nothing left to re-read
    assert len(poll.known) == 3


@pytest.mark.parametrize(
    ("methods", "scope"), [(["POST"], tokens.READ), (["GET"], tokens.ADMIN), (["GET", "POST"], tokens.READ)]
)
def test_only_get_read_routes_may_accept_the_session_cookie(methods, scope):
    from api.auth import ScopedRoute

    with pytest.raises(ValueError, match="session cookie"):
        ScopedRoute("/v1/x", lambda r: None, methods=methods, scope=scope, cookie=True)


def test_seconds_ends_the_stream_and_a_bad_value_is_a_problem(memory):
    with TestClient(_app(memory), headers=AUTH_HEADERS) as api:
        started = time.monotonic()
        ended = api.get("/v1/events", params={"seconds": "0.3"})
        assert ended.status_code == 200 and 0.25 < time.monotonic() - started < 3
        for bad in ("-1", "3601", "nan", "x"):
            answer = api.get("/v1/events", params={"seconds": bad})
            assert answer.status_code == 422 and answer.json()["errors"][0]["pointer"] == "/query/seconds"


def test_two_replicas_send_the_same_ids_and_one_resumes_the_others_stream(memory, serve):
    """Two API processes over one store: the same changes under the same ids, so a client
    that drops off one resumes on the other."""
    apps = [_app(memory), _app(memory)]
    with (
        serve(apps[0]) as one,
        serve(apps[1]) as two,
        httpx.Client(base_url=one.url, headers=AUTH_HEADERS) as a,
        httpx.Client(base_url=two.url, headers=AUTH_HEADERS) as b,
    ):
        on_two: list[Any] = []
        follower = threading.Thread(
            target=lambda: on_two.extend(_events(b, lambda s: len(s) == 3)), daemon=True
        )
        follower.start()

        def submit_three() -> None:
            _until_following(*apps)  # both streams open, both feeds primed
            for _ in range(3):
                memory.submit("live-async")
                time.sleep(0.08)

        threading.Thread(target=submit_three, daemon=True).start()
        on_one = _events(a, lambda s: len(s) == 3)
        follower.join(10)
        assert [i for _, i, _ in on_one] == [i for _, i, _ in on_two]
        resumed = _events(b, lambda s: len(s) == 2, headers={"Last-Event-ID": on_one[0][1]})
        assert [i for _, i, _ in resumed] == [i for _, i, _ in on_one[1:]]
