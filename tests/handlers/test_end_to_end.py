"""Each built-in handler end to end: POST /v1/tasks, a real worker loop runs it, and the
stored result (GET /v1/tasks/{id}) matches what really happened."""

from __future__ import annotations

import io
import json

from PIL import Image

from tests.conftest import wait_for

TERMINAL = {"succeeded", "failed", "cancelled"}


def submit(api, task_type: str, payload) -> str:
    r = api.post("/v1/tasks", json={"type": task_type, "payload": payload})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def finished(api, task_id: str, timeout: float = 20) -> dict:
    return wait_for(
        lambda: (t := api.get(f"/v1/tasks/{task_id}").json())["status"] in TERMINAL and t, timeout=timeout
    )


def test_email(api, start_worker, smtp_server, smtp_env):
    smtp_env(smtp_server.port, username="mailer", password="s3cret")
    task_id = submit(api, "email", {"to": ["ada@example.com"], "subject": "Ready", "text": "Your export."})
    start_worker()
    task = finished(api, task_id)
    assert task["status"] == "succeeded", task["error"]
    assert task["result"] == {
        "message_id": f"<{task_id}@conveyor.test>",
        "accepted": ["ada@example.com"],
        "refused": {},
    }
    [envelope] = smtp_server.envelopes
    assert envelope.rcpt_tos == ["ada@example.com"] and b"Your export." in envelope.original_content
    assert smtp_server.logins == ["mailer"]


def test_image_resize(api, start_worker, runtime):
    source = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 120, 200)).save(source, format="PNG")
    runtime.blobs().put("uploads/photo.png", source.getvalue(), "image/png")
    task_id = submit(
        api,
        "image-resize",
        {"key": "uploads/photo.png", "width": 160, "height": 160, "output_key": "t/p.jpg"},
    )
    start_worker()
    task = finished(api, task_id)
    assert task["status"] == "succeeded", task["error"]
    result = task["result"]
    assert (result["key"], result["width"], result["height"], result["format"]) == (
        "t/p.jpg",
        160,
        120,
        "JPEG",
    )
    stored = runtime.blobs().get("t/p.jpg")
    assert result["bytes"] == len(stored) and Image.open(io.BytesIO(stored)).size == (160, 120)


def test_data_export_of_task_records(api, start_worker, runtime):
    start_worker()
    echoes = [submit(api, "echo", {"n": n}) for n in range(3)]
    for task_id in echoes:
        assert finished(api, task_id)["status"] == "succeeded"
    task_id = submit(api, "data-export", {"tasks": {"type": "echo", "status": "succeeded"}, "format": "json"})
    task = finished(api, task_id)
    assert task["status"] == "succeeded", task["error"]
    assert task["result"]["rows"] == 3 and task["result"]["key"] == f"exports/{task_id}.json"
    records = json.loads(runtime.blobs().get(task["result"]["key"]))
    assert sorted(r["id"] for r in records) == sorted(echoes)
    assert sorted(r["result"]["n"] for r in records) == [0, 1, 2]


def test_webhook(api, start_worker, http_server):
    ok = submit(api, "webhook-internal", {"url": http_server.url("/ok"), "json": {"order": 1}})
    flaky = submit(api, "webhook-internal", {"url": http_server.url("/status/503")})
    gone = submit(api, "webhook-internal", {"url": http_server.url("/status/404")})
    guarded = submit(api, "webhook", {"url": http_server.url("/ok?guarded")})  # the example type
    start_worker()

    task = finished(api, ok)
    assert task["status"] == "succeeded", task["error"]
    assert task["result"]["status_code"] == 200 and task["result"]["json"]["body"] == '{"order": 1}'

    task = finished(api, flaky)  # retried until its attempts (2) ran out
    assert (task["status"], task["attempts"]) == ("failed", 2) and "503" in task["error"]["message"]

    task = finished(api, gone)  # a 4xx is final at once
    assert (task["status"], task["attempts"]) == ("failed", 1) and "404" in task["error"]["message"]

    task = finished(api, guarded)
    assert (task["status"], task["attempts"]) == ("failed", 1)
    assert "loopback" in task["error"]["message"]
    assert sorted(http_server.paths()) == ["/ok", "/status/404", "/status/503", "/status/503"]


def test_a_submit_only_token_cannot_export_task_records(runtime, start_worker, tmp_path):
    """Through the API: the submitting token's scopes are recorded on the task, and the
    worker refuses a task-record export for a token that could not read them itself."""
    from dataclasses import replace

    from prometheus_client import CollectorRegistry
    from starlette.testclient import TestClient

    from api.app import create_app
    from conveyor import tokens
    from conveyor.bootstrap import build

    secrets = {"submitter": tokens.generate_token(), "reader": tokens.generate_token()}
    scopes = {"submitter": {tokens.SUBMIT}, "reader": {tokens.SUBMIT, tokens.READ}}
    path = tmp_path / "tokens.json"
    entries = [tokens.TokenEntry(n, tokens.hash_token(secrets[n]), frozenset(scopes[n])) for n in secrets]
    tokens.write_tokens_file(path, tokens.TokenSet(entries))
    secured = build(replace(runtime.settings, auth_tokens_file=str(path)))
    with TestClient(create_app(secured.engine, CollectorRegistry())) as client:
        ids = {}
        for name, secret in secrets.items():
            r = client.post(
                "/v1/tasks",
                json={"type": "data-export", "payload": {"tasks": {"type": "echo"}, "format": "json"}},
                headers={"Authorization": f"Bearer {secret}"},
            )
            assert r.status_code == 202, r.text
            ids[name] = r.json()["id"]
        batch = client.post(
            "/v1/tasks/batch",
            json={"tasks": [{"type": "echo", "payload": {}}]},
            headers={"Authorization": f"Bearer {secrets['submitter']}"},
        )
        assert batch.status_code == 202, batch.text
    store = runtime.engine.store
    assert store.get(ids["submitter"]).submitter_scopes == frozenset({tokens.SUBMIT})
    assert store.get(batch.json()["items"][0]["id"]).submitter_scopes == frozenset({tokens.SUBMIT})
    start_worker()
    api_view = runtime.engine
    denied = wait_for(lambda: (t := api_view.get(ids["submitter"])).status.terminal and t, timeout=20)
    allowed = wait_for(lambda: (t := api_view.get(ids["reader"])).status.terminal and t, timeout=20)
    assert denied.status.value == "failed" and "tasks:read" in denied.error.message
    assert not runtime.blobs().exists(f"exports/{ids['submitter']}.json")
    assert allowed.status.value == "succeeded", allowed.error
