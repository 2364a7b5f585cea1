"""The API follows the registry: 422s that name what is allowed, payloadSchema with JSON
pointers, /v1/task-types, and live changes without a restart."""

from __future__ import annotations

import time

import pytest

from tests.registry.conftest import TaskTypeDir

SCHEMA = {
    "type": "object",
    "required": ["text", "count"],
    "properties": {
        "text": {"type": "string"},
        "count": {"type": "integer", "minimum": 1},
        "items": {"type": "array", "items": {"type": "string"}},
    },
}


TUNED = {
    "handler": "echo",
    "maxAttempts": 6,
    "backoff": {"initialSeconds": 2, "maxSeconds": 9},
    "timeoutSeconds": 45,
    "concurrency": 3,
    "paused": True,
    "retentionSeconds": 3600,
    "payloadSchema": SCHEMA,
    "description": "a tuned type",
    "options": {"allowPrivateNetworks": True},
    "notify": {"url": "https://hooks.example.com/tuned"},
}


@pytest.fixture
def tasktypes(tasktypes: TaskTypeDir) -> TaskTypeDir:
    """Written before the API starts, so the tests need not wait for the watcher."""
    tasktypes.apply("off", handler="echo", enabled=False)
    tasktypes.apply("broken", handler="echo", payloadSchema={"type": "nonsense"})
    tasktypes.apply("strict", handler="echo", payloadSchema=SCHEMA)
    tasktypes.apply("tuned", **TUNED)
    return tasktypes


def _problem(resp) -> dict:
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    return resp.json()


def test_unknown_disabled_and_not_ready_types_are_422_naming_the_enabled_ones(api):
    enabled = "echo, strict, tuned"
    for name, why in [("off", "is not enabled"), ("broken", "is not enabled"), ("nope", "not a known")]:
        body = _problem(api.post("/v1/tasks", json={"type": name, "payload": {}}))
        assert why in body["detail"] and f"enabled types: {enabled}" in body["detail"]
        assert body["errors"] == [{"pointer": "/type", "message": f"must be one of: {enabled}"}]


def test_payload_schema_violations_are_422_with_a_pointer_each(api):
    body = _problem(
        api.post("/v1/tasks", json={"type": "strict", "payload": {"count": 0, "items": ["a", 5]}})
    )
    pointers = sorted(e["pointer"] for e in body["errors"])
    assert pointers == ["/payload", "/payload/count", "/payload/items/1"]
    assert any("'text' is a required property" in e["message"] for e in body["errors"])

    batch = api.post(
        "/v1/tasks/batch",
        json={
            "tasks": [
                {"type": "strict", "payload": {"text": "ok", "count": 1}},
                {"type": "strict", "payload": {}},
            ]
        },
    )
    assert [e["pointer"] for e in _problem(batch)["errors"]] == ["/tasks/1/payload", "/tasks/1/payload"]
    assert (
        api.post("/v1/tasks", json={"type": "strict", "payload": {"text": "ok", "count": 2}}).status_code
        == 202
    )


def test_task_types_lists_every_type_with_its_settings(api):
    resp = api.get("/v1/task-types")
    assert resp.status_code == 200
    items = {t["name"]: t for t in resp.json()["items"]}
    assert sorted(items) == ["broken", "echo", "off", "strict", "tuned"]
    assert items["off"]["enabled"] is False
    assert items["broken"]["ready"] is False and items["broken"]["reason"] == "InvalidSchema"
    tuned = items["tuned"]
    assert tuned == {
        "name": "tuned",
        "handler": "echo",
        "enabled": True,
        "paused": True,
        "maxAttempts": 6,
        "backoff": {"initialSeconds": 2.0, "maxSeconds": 9.0},
        "timeoutSeconds": 45,
        "concurrency": {"perWorker": 3, "max": None, "key": None},
        "retentionSeconds": 3600,
        "payloadSchema": SCHEMA,
        "description": "a tuned type",
        "options": {"allowPrivateNetworks": True},
        "notify": {"url": "https://hooks.example.com/tuned", "allowPrivateNetworks": False},
        "priority": "normal",
        "rateLimit": None,
        "uniqueness": None,
        "ready": True,
        "reason": "Ready",
        "message": "",
    }


def test_enabling_a_type_takes_effect_within_5s_without_a_restart(api, tasktypes: TaskTypeDir):
    assert api.post("/v1/tasks", json={"type": "off", "payload": {}}).status_code == 422
    tasktypes.apply("off", handler="echo", enabled=True)
    start = time.monotonic()
    while api.post("/v1/tasks", json={"type": "off", "payload": {}}).status_code != 202:
        assert time.monotonic() - start < 5.0, "the API did not pick up the change within 5 s"
        time.sleep(0.1)
