"""Limits: per-token request rate (429 + Retry-After), payload size, batch size."""

from __future__ import annotations

import time

import pytest

from api.ratelimit import RateLimiter
from tests.security.test_auth import problem


def test_rate_limit_is_per_token_with_retry_after(secured, auth_tokens):
    api = secured(rate_limit="5/second")
    mine, other = auth_tokens.headers("all"), auth_tokens.headers("other")
    codes = [api.get("/v1/task-types", headers=mine).status_code for _ in range(5)]
    assert codes == [200] * 5
    r = api.get("/v1/task-types", headers=mine)
    body = problem(r, 429)
    assert 1 <= int(r.headers["retry-after"]) <= 1 and "retry" in body["detail"]
    # Another caller is not held back by this one; probes are never limited.
    assert api.get("/v1/task-types", headers=other).status_code == 200
    assert all(api.get("/healthz").status_code == 200 for _ in range(10))
    time.sleep(1.05)
    assert api.get("/v1/task-types", headers=mine).status_code == 200


def test_refused_requests_do_not_use_up_the_longer_window(secured, auth_tokens):
    api = secured(rate_limit="2/second;3/minute")
    mine = auth_tokens.headers("reader")
    assert [api.get("/v1/task-types", headers=mine).status_code for _ in range(4)] == [200, 200, 429, 429]
    time.sleep(1.05)
    assert api.get("/v1/task-types", headers=mine).status_code == 200  # the 429s did not count
    r = api.get("/v1/task-types", headers=mine)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 30  # the minute window


def test_rate_limit_can_be_turned_off_and_a_bad_one_fails_at_startup(secured, auth_tokens):
    api = secured(rate_limit="off")
    assert all(
        api.get("/v1/tasks", headers=auth_tokens.headers("reader")).status_code == 200 for _ in range(30)
    )
    with pytest.raises(ValueError, match="CONVEYOR_RATE_LIMIT"):
        RateLimiter("lots per second")


def test_payload_and_batch_limits_name_the_field(secured, auth_tokens):
    api = secured(max_payload_bytes=1000, max_batch_size=3)
    headers = auth_tokens.headers("submitter")
    big = {"type": "echo", "payload": {"blob": "x" * 1200}}
    body = problem(api.post("/v1/tasks", json=big, headers=headers), 413)
    assert body["errors"][0]["pointer"] == "/payload"
    small = {"type": "echo", "payload": {}}
    body = problem(api.post("/v1/tasks/batch", json={"tasks": [small, big]}, headers=headers), 413)
    assert body["errors"][0]["pointer"] == "/tasks/1/payload"
    body = problem(api.post("/v1/tasks/batch", json={"tasks": [small] * 4}, headers=headers), 422)
    assert body["errors"][0]["pointer"] == "/tasks"
    assert api.post("/v1/tasks/batch", json={"tasks": [small] * 3}, headers=headers).status_code == 202


def test_counting_a_request_starts_no_thread_and_old_entries_are_dropped(monkeypatch):
    """The limiter's storage expires its entries inline: no timer thread per request (the
    stock memory storage starts one whenever none is pending), and what has left every
    window is dropped once the expiry is due."""
    import threading

    from api import ratelimit

    limiter = RateLimiter("1000/second;5000/minute")
    started: list[threading.Thread] = []
    original = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self) or original(self))
    for n in range(50):
        assert limiter.hit(f"token-{n % 3}") is None
        time.sleep(0.002)  # longer apart than the stock storage's 10 ms timer, at times
    assert started == []
    storage = limiter._limiter.storage
    assert sum(len(e) for e in storage.events.values()) == 2 * 50  # one entry per window
    clock = time.time() + 120  # past both windows
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock)
    monkeypatch.setattr(time, "time", lambda: clock)
    limiter.hit("token-0")
    assert {k: len(v) for k, v in storage.events.items() if v} == {
        k: 1 for k in storage.events if "token-0" in k
    }
