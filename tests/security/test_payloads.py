"""tasks:read sees every payload; tasks:read-metadata reads the same routes without
payloads and results, and an admin-only token's cancel/retry answers hide them too."""

from __future__ import annotations

from tests.security.test_auth import problem
from tests.support.unique import unique_types

SECRET = {"card": "4111 1111 1111 1111"}


def test_a_metadata_token_reads_tasks_without_payloads_or_results(secured, auth_tokens):
    api = secured(rate_limit="off")
    made = api.post(
        "/v1/tasks", json={"type": "echo", "payload": SECRET}, headers=auth_tokens.headers("submitter")
    )
    assert made.status_code == 202 and made.json()["payload"] == SECRET  # the submitter's own task
    task_id = made.json()["id"]

    full = auth_tokens.headers("reader")
    assert api.get(f"/v1/tasks/{task_id}", headers=full).json()["payload"] == SECRET
    assert "redacted" not in api.get(f"/v1/tasks/{task_id}", headers=full).json()

    meta = auth_tokens.headers("metadata")
    answers = [
        api.get(f"/v1/tasks/{task_id}", headers=meta).json(),
        *[t for t in api.get("/v1/tasks", headers=meta).json()["items"] if t["id"] == task_id],
        *[
            t
            for t in api.get("/v1/tasks", params={"type": "echo"}, headers=meta).json()["items"]
            if t["id"] == task_id
        ],
    ]
    assert len(answers) == 3
    for task in answers:
        assert "payload" not in task and "result" not in task, task
        assert task["redacted"] == ["payload", "result"]
        assert task["id"] == task_id and task["status"] == "queued" and task["type"] == "echo"
    assert "4111" not in api.get("/v1/tasks", headers=meta).text
    # It passes the read routes, and nothing beyond them.
    assert api.get("/v1/task-types", headers=meta).status_code == 200
    assert problem(api.get("/v1/stats", headers=meta), 403)["required_scope"] == "tasks:admin"
    problem(api.post("/v1/tasks", json={"type": "echo"}, headers=meta), 403)

    # An admin-only token gets the cancelled task back without its payload; with tasks:read, whole.
    cancelled = api.post(f"/v1/tasks/{task_id}/cancel", headers=auth_tokens.headers("admin"))
    assert cancelled.status_code == 200 and "payload" not in cancelled.json()
    assert "4111" not in cancelled.text
    again = api.post(f"/v1/tasks/{task_id}/retry", headers=auth_tokens.headers("all"))
    assert again.status_code == 202 and again.json()["payload"] == SECRET


def test_the_openapi_document_describes_the_redacted_task(secured):
    schema = secured().get("/openapi.json").json()["components"]["schemas"]["Task"]
    assert "redacted" in schema["properties"]


def test_the_active_task_a_unique_submit_gets_back_is_shown_as_a_read_would(secured, auth_tokens):
    """With onDuplicate return-existing the answer is another caller's task: a token that
    may not read payloads gets it without payload and result, as from GET."""
    api = secured(rate_limit="off")
    body = {"type": "echo", "payload": SECRET, "unique_key": f"card-{id(api)}"}
    made = api.post("/v1/tasks", json=body, headers=auth_tokens.headers("all"))
    assert made.status_code == 202
    again = api.post(
        "/v1/tasks", json=body | {"payload": {"probe": 1}}, headers=auth_tokens.headers("submitter")
    )
    assert again.status_code == 200 and again.json()["id"] == made.json()["id"]
    assert "payload" not in again.json() and "4111" not in again.text
    assert again.json()["redacted"] == ["payload", "result"]
    full = api.post("/v1/tasks", json=body, headers=auth_tokens.headers("reader"))
    assert full.status_code == 403  # a reader cannot submit at all
    whole = api.post("/v1/tasks", json=body, headers=auth_tokens.headers("other"))
    assert whole.status_code == 200 and whole.json()["payload"] == SECRET


def test_a_unique_key_read_from_the_payload_is_not_shown_to_a_metadata_token(secured, auth_tokens, tmp_path):
    """The record keeps a submitted unique_key only: a key taken from the payload would
    show a metadata-only token part of a payload it may not read."""
    api = secured(rate_limit="off", tasktypes=str(unique_types(tmp_path)))
    body = {"type": "latest", "payload": {"user": SECRET["card"]}}
    made = api.post("/v1/tasks", json=body, headers=auth_tokens.headers("all"))
    assert made.status_code == 202, made.text
    for path in (f"/v1/tasks/{made.json()['id']}", "/v1/tasks?type=latest"):
        meta = api.get(path, headers=auth_tokens.headers("metadata"))
        assert meta.status_code == 200 and made.json()["id"] in meta.text and "4111" not in meta.text
