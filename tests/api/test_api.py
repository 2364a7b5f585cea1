"""The HTTP API against a real moto server: every route, every documented error."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import AUTH_HEADERS

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def post(api, body, **headers):
    return api.post("/v1/tasks", json=body, headers=headers)


def problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_task_representation(api):
    r = post(api, {"type": "echo", "payload": {"a": [1, 2]}, "max_attempts": 5})
    assert r.status_code == 202
    task = r.json()
    got = api.get(f"/v1/tasks/{task['id']}").json()
    assert got == task
    for key in ("created_at", "updated_at"):
        assert RFC3339.match(got[key])
    assert got["max_attempts"] == 5 and got["attempts"] == 0
    assert set(got) >= {
        "id", "type", "payload", "status", "attempts", "max_attempts", "created_at", "updated_at",
        "started_at", "finished_at", "run_at", "result", "error", "worker",
    }  # fmt: skip


def test_ids_sort_by_creation_time(api):
    ids = [post(api, {"type": "echo"}).json()["id"] for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_run_at_and_delay(api):
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    task = post(api, {"type": "echo", "run_at": later}).json()
    assert task["run_at"] and task["status"] == "queued"
    task = post(api, {"type": "echo", "delay_seconds": 30}).json()
    run_at = datetime.fromisoformat(task["run_at"].replace("Z", "+00:00"))
    assert 25 < (run_at - datetime.now(UTC)).total_seconds() <= 31


def test_idempotency_key(api):
    body = {"type": "echo", "payload": {"order": 7}}
    first = post(api, body, **{"Idempotency-Key": "order-7"})
    again = post(api, body, **{"Idempotency-Key": "order-7"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = post(api, {"type": "echo", "payload": {"order": 8}}, **{"Idempotency-Key": "order-7"})
    assert problem(other, 409)["type"] == "/problems/idempotency-conflict"
    fresh = post(api, body, **{"Idempotency-Key": "order-8"})
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]


def test_batch_keeps_order_and_names_the_bad_item(api):
    items = [{"type": "echo", "payload": {"n": n}} for n in range(12)]
    r = api.post("/v1/tasks/batch", json={"tasks": items})
    assert r.status_code == 202, r.text
    assert [t["payload"]["n"] for t in r.json()["items"]] == list(range(12))
    bad = api.post("/v1/tasks/batch", json={"tasks": [{"type": "echo"}, {"type": 3}]})
    assert problem(bad, 422)["errors"][0]["pointer"] == "/tasks/1/type"
    unknown = api.post("/v1/tasks/batch", json={"tasks": [{"type": "echo"}, {"type": "nope"}]})
    assert problem(unknown, 422)["errors"][0]["pointer"] == "/tasks/1/type"
    too_many = api.post("/v1/tasks/batch", json={"tasks": [{"type": "echo"}] * 101})
    assert problem(too_many, 422)["errors"][0]["pointer"] == "/tasks"


def test_list_filters_and_paginates_newest_first(api):
    echo = [post(api, {"type": "echo", "payload": {"n": n}}).json()["id"] for n in range(5)]
    text = post(api, {"type": "text-transform", "payload": {"text": "x"}}).json()["id"]
    everything = api.get("/v1/tasks").json()["items"]
    assert [t["id"] for t in everything] == [text, *reversed(echo)]
    seen, cursor = [], None
    while True:
        page = api.get(
            "/v1/tasks", params={"type": "echo", "limit": 2, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(echo))
    queued = api.get("/v1/tasks", params={"status": "queued", "type": "text-transform"}).json()["items"]
    assert [t["id"] for t in queued] == [text]
    assert api.get("/v1/tasks", params={"status": "failed"}).json()["items"] == []


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ({"status": "done"}, "/query/status"),
        ({"limit": "0"}, "/query/limit"),
        ({"limit": "x"}, "/query/limit"),
    ],
)
def test_list_rejects_bad_parameters(api, params, pointer):
    assert problem(api.get("/v1/tasks", params=params), 422)["errors"][0]["pointer"] == pointer


def test_list_rejects_a_forged_cursor(api):
    assert (
        problem(api.get("/v1/tasks", params={"cursor": "!!!"}), 400)["errors"][0]["pointer"]
        == "/query/cursor"
    )


def test_bad_input_is_a_clear_4xx(api):
    r = api.post("/v1/tasks", content=b'{"type": ', headers={"content-type": "application/json"})
    assert problem(r, 400)["type"] == "/problems/malformed-json"
    r = api.post("/v1/tasks", content=b"type=echo", headers={"content-type": "text/plain"})
    problem(r, 415)
    body = problem(post(api, {"type": "nope"}), 422)
    assert "echo" in body["detail"] and body["errors"][0]["pointer"] == "/type"
    body = problem(post(api, {"type": "echo", "delay_seconds": "soon"}), 422)
    assert body["errors"][0]["pointer"] == "/delay_seconds"
    body = problem(post(api, {"type": "echo", "max_attempts": 0}), 422)
    assert body["errors"][0]["pointer"] == "/max_attempts"
    body = problem(post(api, {"payload": {}}), 422)
    assert body["errors"][0]["pointer"] == "/type"
    body = problem(post(api, {"type": "echo", "colour": "red"}), 422)
    assert body["errors"][0]["pointer"] == "/colour"
    problem(post(api, {"type": "echo", "delay_seconds": 5, "run_at": "2030-01-01T00:00:00Z"}), 422)
    problem(post(api, {"type": "echo", "delay_seconds": 15 * 24 * 3600}), 422)
    body = problem(post(api, {"type": "text-transform", "payload": {"text": 5}}), 422)
    assert body["errors"] == [{"pointer": "/payload/text", "message": "5 is not of type 'string'"}]
    assert problem(api.get("/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404)["type"] == "/problems/not-found"
    # An id that is no ULID (here the store's own worker-record prefix) never reaches the store.
    for bad in (
        "worker%23x",
        "idem%23k",
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",
        "81ARZ3NDEKTSV4RRFFQ69G5FAV",
        "batch",
    ):
        assert problem(api.get(f"/v1/tasks/{bad}"), 400)["errors"][0]["pointer"] == "/path/id", bad
        assert problem(api.post(f"/v1/tasks/{bad}/cancel"), 400)["errors"][0]["pointer"] == "/path/id"
    problem(api.delete("/v1/tasks"), 405)
    problem(api.get("/v1/nothing-here"), 404)


def test_payload_over_the_limit_is_413(settings_factory):
    from prometheus_client import CollectorRegistry
    from starlette.testclient import TestClient

    from api.app import create_app
    from conveyor.bootstrap import build

    rt = build(settings_factory(max_payload_bytes=1024))
    with TestClient(create_app(rt.engine, CollectorRegistry()), headers=AUTH_HEADERS) as api:
        body = problem(post(api, {"type": "echo", "payload": {"blob": "x" * 2000}}), 413)
        assert body["errors"][0]["pointer"] == "/payload"
        huge = api.post(
            "/v1/tasks", content=b"[" + b"1," * 100_000 + b"1]", headers={"content-type": "application/json"}
        )
        problem(huge, 413)
        assert post(api, {"type": "echo", "payload": {"blob": "x" * 900}}).status_code == 202


def test_cancel_and_retry(api):
    task = post(api, {"type": "echo", "delay_seconds": 600}).json()
    cancelled = api.post(f"/v1/tasks/{task['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert problem(api.post(f"/v1/tasks/{task['id']}/cancel"), 409)["type"] == "/problems/invalid-state"
    retried = api.post(f"/v1/tasks/{task['id']}/retry")
    assert retried.status_code == 202
    assert retried.json()["status"] == "queued" and retried.json()["attempts"] == 0
    problem(api.post(f"/v1/tasks/{task['id']}/retry"), 409)
    problem(api.post("/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel"), 404)
    problem(api.post("/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV/retry"), 404)


def test_retry_runs_a_failed_task_again(api, start_worker):
    from tests.conftest import wait_for

    start_worker()
    task = post(api, {"type": "fail", "payload": {"permanent": True}}).json()
    wait_for(lambda: api.get(f"/v1/tasks/{task['id']}").json()["status"] == "failed")
    assert api.post(f"/v1/tasks/{task['id']}/retry").status_code == 202
    again = wait_for(lambda: (t := api.get(f"/v1/tasks/{task['id']}").json())["status"] == "failed" and t)
    assert again["attempts"] == 1 and again["error"]["type"] == "PermanentError"


def test_stats_workers_and_probes(api, start_worker):
    from tests.conftest import wait_for

    post(api, {"type": "echo", "delay_seconds": 600})
    stats = api.get("/v1/stats").json()
    assert stats["tasks"]["queued"] == 1 and stats["pending_tasks"] == 1 and stats["total_tasks"] == 1
    assert stats["queue"]["delayed"] == 1 and stats["dlq_depth"] == 0
    assert api.get("/v1/workers").json()["items"] == []
    w = start_worker()
    workers = wait_for(lambda: api.get("/v1/workers").json()["items"])
    assert workers[0]["id"] == w.worker.id and workers[0]["concurrency"] == 8
    assert api.get("/v1/stats").json()["workers"] == 1
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").status_code == 200
    types = {t["name"]: t for t in api.get("/v1/task-types").json()["items"]}
    assert types["text-transform"]["payloadSchema"]["required"] == ["text"]


def test_metrics(api):
    post(api, {"type": "echo"})
    api.get("/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV")
    text = api.get("/metrics").text
    assert 'conveyor_tasks_submitted_total{type="echo"} 1.0' in text
    assert 'conveyor_http_requests_total{code="404",method="GET",route="/v1/tasks/{id}"} 1.0' in text
    assert 'conveyor_queue_messages{queue="main",state="visible"} 1.0' in text
    assert 'conveyor_tasks{status="queued"} 1.0' in text
    assert "01ARZ3NDEKTSV4RRFFQ69G5FAV" not in text  # no ids in labels


def test_openapi_documents_every_route(api):
    spec = api.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    for path in ("/v1/tasks", "/v1/tasks/batch", "/v1/tasks/{id}", "/v1/tasks/{id}/cancel",
                 "/v1/tasks/{id}/retry", "/v1/stats", "/v1/workers", "/v1/task-types"):  # fmt: skip
        assert path in spec["paths"]


def test_backend_down_is_503_with_retry_after(settings, monkeypatch):
    from prometheus_client import CollectorRegistry
    from starlette.testclient import TestClient

    from api.app import create_app
    from conveyor.bootstrap import build
    from tests.support.servers import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    rt = build(settings)  # starts fine with AWS unreachable
    app = create_app(rt.engine, CollectorRegistry())
    with TestClient(app, raise_server_exceptions=False, headers=AUTH_HEADERS) as api:
        for r in (
            post(api, {"type": "echo"}),
            api.get("/v1/tasks/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            api.get("/readyz"),
        ):
            body = problem(r, 503)
            assert r.headers["retry-after"].isdigit()
            assert "Traceback" not in body["detail"]
        assert api.get("/healthz").status_code == 200


def test_a_task_id_is_read_case_insensitively_as_a_ulid(api):
    task = post(api, {"type": "echo"}).json()
    assert api.get(f"/v1/tasks/{task['id'].lower()}").json()["id"] == task["id"]
