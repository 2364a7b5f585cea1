"""Unique keys through the HTTP API: 202 created, 200 with the active task, 409 duplicate
naming /unique_key and the existing task, replace; each answer as the OpenAPI document says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from conveyor.bootstrap import build
from conveyor.model import now
from tests.conftest import AUTH_HEADERS
from tests.support.unique import unique_types


@pytest.fixture
def api(settings_factory, tmp_path: Path) -> Iterator[TestClient]:
    from api.app import create_app

    engine = build(settings_factory(tasktypes=str(unique_types(tmp_path)))).engine
    with TestClient(
        create_app(engine, CollectorRegistry()), raise_server_exceptions=False, headers=AUTH_HEADERS
    ) as client:
        yield client


def documented(api: TestClient, r: Any) -> dict[str, Any]:
    """The response's body, checked against what /openapi.json says submitTask answers."""
    spec = api.get("/openapi.json").json()
    answer = spec["paths"]["/v1/tasks"]["post"]["responses"][str(r.status_code)]
    (media, content), *_ = answer["content"].items()
    assert r.headers["content-type"].startswith(media)
    schema = {**content["schema"], "components": spec["components"]}
    body: dict[str, Any] = r.json()
    jsonschema.validate(body, schema)
    return body


def submit(api: TestClient, body: dict[str, Any], **headers: str) -> Any:
    return api.post("/v1/tasks", json=body, headers=headers)


def test_return_existing_is_200_with_the_active_task(api):
    first = submit(api, {"type": "latest", "payload": {"user": "ada", "n": 1}})
    assert first.status_code == 202
    created = documented(api, first)
    assert created["unique_key"] is None  # the key came from the payload: not copied out of it
    again = submit(api, {"type": "latest", "payload": {"user": "ada", "n": 2}})
    assert again.status_code == 200
    assert documented(api, again) == created
    assert again.headers["location"] == f"/v1/tasks/{created['id']}"


def test_reject_is_409_duplicate_naming_the_key_and_the_existing_task(api):
    first = documented(api, submit(api, {"type": "once", "payload": {"user": "ada"}}))
    r = submit(api, {"type": "once", "payload": {"user": "ada"}})
    assert r.status_code == 409
    problem = documented(api, r)
    assert problem["type"] == "/problems/duplicate"
    assert problem["existing_task"] == first["id"]
    assert problem["errors"][0]["pointer"] == "/unique_key"
    assert "Traceback" not in r.text


def test_replace_is_202_and_the_queued_one_is_cancelled(api):
    first = documented(api, submit(api, {"type": "debounce", "payload": {"user": "ada", "v": 1}}))
    r = submit(api, {"type": "debounce", "payload": {"user": "ada", "v": 2}, "delay_seconds": 30})
    assert r.status_code == 202
    second = documented(api, r)
    assert second["payload"] == {"user": "ada", "v": 2} and second["run_at"]
    assert api.get(f"/v1/tasks/{first['id']}").json()["status"] == "cancelled"


def test_a_replace_of_a_running_holder_under_queued_or_running_is_409(api):
    first = submit(api, {"type": "strict", "payload": {"user": "ada"}}).json()
    engine = api.app.state.conveyor.engine
    assert engine.store.claim(first["id"], "strict", "w1", now()).task is not None
    r = submit(api, {"type": "strict", "payload": {"user": "ada"}})
    assert documented(api, r)["existing_task"] == first["id"] and r.status_code == 409
    assert "running" in r.json()["detail"]


def test_a_given_unique_key_and_priority_on_a_plain_type(api):
    r = submit(api, {"type": "plain", "payload": {}, "unique_key": "nightly", "priority": "high"})
    created = documented(api, r)
    assert created["unique_key"] == "nightly" and created["priority"] == "high"
    assert submit(api, {"type": "plain", "payload": {}, "unique_key": "nightly"}).status_code == 200


def test_a_payload_without_the_key_field_is_422_naming_it(api):
    r = submit(api, {"type": "latest", "payload": {"name": "ada"}})
    assert r.status_code == 422
    assert documented(api, r)["errors"][0]["pointer"] == "/payload/user"
    r = submit(api, {"type": "latest", "payload": {}, "unique_key": ""})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/unique_key"


def test_a_batch_with_a_unique_task_is_422_naming_the_item(api):
    items = [{"type": "plain", "payload": {}}, {"type": "plain", "payload": {}, "unique_key": "k"}]
    r = api.post("/v1/tasks/batch", json={"tasks": items})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["pointer"] == "/tasks/1/unique_key"
    assert api.get("/v1/tasks").json()["items"] == []


def test_idempotency_comes_before_uniqueness(api):
    body = {"type": "once", "payload": {"user": "ada"}}
    first = submit(api, body, **{"Idempotency-Key": "a"})
    assert first.status_code == 202
    again = submit(api, body, **{"Idempotency-Key": "a"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    # Another request under another key meets the held unique key.
    assert submit(api, body, **{"Idempotency-Key": "b"}).status_code == 409
