"""The submit body's ``notify`` and GET /v1/tasks/{id}/deliveries, on the memory engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from api.app import create_app
from conveyor.model import Delivery, NotifyState, Status
from tests.conftest import AUTH_HEADERS, make_settings
from tests.notify.conftest import TYPE
from tests.support.engines import memory_engine


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[TestClient, object]]:
    for name, notify in {"private-ok": '{"url": "http://10.0.0.5/h", "allowPrivateNetworks": true}',
                         "public-only": "null"}.items():  # fmt: skip
        (tmp_path / f"{name}.yaml").write_text(TYPE.format(name=name, notify=notify))
    engine = memory_engine(make_settings(tasktypes=str(tmp_path)), tmp_path)
    with TestClient(
        create_app(engine, CollectorRegistry()), raise_server_exceptions=False, headers=AUTH_HEADERS
    ) as client:
        yield client, engine


def problem_at(r, pointer: str) -> dict:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert pointer in [e["pointer"] for e in body["errors"]], body
    return body


@pytest.mark.parametrize(
    "notify",
    [
        {"url": "not a url"},
        {"url": "ftp://example.com/x"},
        {"url": "https://"},
        {"url": 7},
        {"url": "https://example.com/" + "x" * 2048},
    ],
)
def test_a_bad_notify_url_is_a_problem_naming_the_field(world, notify):
    client, _ = world
    problem_at(client.post("/v1/tasks", json={"type": "public-only", "notify": notify}), "/notify/url")


def test_notify_takes_only_a_url(world):
    client, _ = world
    r = client.post(
        "/v1/tasks", json={"type": "public-only", "notify": {"url": "https://a.example/h", "x": 1}}
    )
    assert r.status_code == 422 and "/notify" in r.text
    r = client.post("/v1/tasks", json={"type": "public-only", "notify": {}})
    assert r.status_code == 422 and "/notify" in r.text


def test_plain_http_needs_a_type_that_allows_private_networks(world):
    client, _ = world
    body = {"type": "public-only", "notify": {"url": "http://hooks.example.com/h"}}
    problem_at(client.post("/v1/tasks", json=body), "/notify/url")
    batch = {"tasks": [{"type": "public-only"}, body]}
    problem_at(client.post("/v1/tasks/batch", json=batch), "/tasks/1/notify/url")
    r = client.post("/v1/tasks", json={"type": "private-ok", "notify": {"url": "http://10.1.2.3/h"}})
    assert r.status_code == 202, r.text


def test_the_task_keeps_its_url_and_submitter_and_shows_its_deliveries(world):
    client, engine = world
    r = client.post("/v1/tasks", json={"type": "public-only", "notify": {"url": "https://a.example/h"}})
    assert r.status_code == 202, r.text
    assert r.json()["notify"] == {"url": "https://a.example/h", "state": None}
    task = engine.get(r.json()["id"])
    assert task.notify_url == "https://a.example/h" and task.submitter == "test"
    shown = client.get(f"/v1/tasks/{task.id}/deliveries").json()
    assert shown == {"id": task.id, "url": "https://a.example/h", "state": None, "deliveries": []}
    # As a worker leaves it after one failed attempt:
    claimed = engine.store.claim(task.id, task.type, "w", task.created_at).task
    done = engine.store.finish(claimed, Status.SUCCEEDED, task.created_at, {"ok": 1}, notify=True)
    attempt = Delivery(task.created_at, "id-1", 502, 40, "HTTP 502")
    engine.store.record_delivery(done, attempt, NotifyState.PENDING)
    shown = client.get(f"/v1/tasks/{task.id}/deliveries").json()
    assert shown["state"] == "pending" and shown["deliveries"] == [attempt.to_json()]
    assert client.get("/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV/deliveries").status_code == 404
    assert client.get("/v1/tasks/nope/deliveries").status_code == 400
