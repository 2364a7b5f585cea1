"""Bearer tokens with scopes, against the real app, a real hashed tokens file and moto."""

from __future__ import annotations

import json
import time

import pytest

from conveyor import tokens
from conveyor.settings import Settings
from tests.conftest import wait_for

MISSING_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

# (method, path, scope) for every /v1 operation; {id} is filled with a real task id.
ROUTES = [
    ("POST", "/v1/tasks", tokens.SUBMIT),
    ("POST", "/v1/tasks/batch", tokens.SUBMIT),
    ("GET", "/v1/tasks", tokens.READ),
    ("GET", "/v1/tasks/{id}", tokens.READ),
    ("GET", "/v1/task-types", tokens.READ),
    ("POST", "/v1/tasks/{id}/cancel", tokens.ADMIN),
    ("POST", "/v1/tasks/{id}/retry", tokens.ADMIN),
    ("GET", "/v1/stats", tokens.ADMIN),
    ("GET", "/v1/workers", tokens.ADMIN),
]
SCOPED = {tokens.SUBMIT: "submitter", tokens.READ: "reader", tokens.ADMIN: "admin"}
BODIES = {
    "/v1/tasks": {"type": "echo", "payload": {}},
    "/v1/tasks/batch": {"tasks": [{"type": "echo", "payload": {}}]},
}


def problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["detail"]
    return body


def call(client, method: str, path: str, headers: dict[str, str] | None = None):
    return client.request(method, path, json=BODIES.get(path), headers=headers or {})


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer", "bearer  "])
def test_no_or_bad_token_is_401_problem_json_on_every_route(secured, header):
    api = secured()
    for method, path, _ in ROUTES:
        r = call(api, method, path.format(id=MISSING_ID), {"Authorization": header} if header else None)
        body = problem(r, 401)
        assert r.headers["www-authenticate"].startswith('Bearer realm="conveyor"'), (method, path)
        assert "token" in body["detail"]


def test_each_route_needs_its_scope_and_only_that(secured, auth_tokens):
    api = secured()
    task_id = call(api, "POST", "/v1/tasks", auth_tokens.headers("submitter")).json()["id"]
    for method, path, scope in ROUTES:
        url = path.format(id=task_id)
        for name in ("submitter", "reader", "admin"):
            r = call(api, method, url, auth_tokens.headers(name))
            if SCOPED[scope] == name:
                assert r.status_code < 400 or r.status_code == 409, (method, url, name, r.text)
            else:
                body = problem(r, 403)
                assert body["required_scope"] == scope
                assert f'scope="{scope}"' in r.headers["www-authenticate"]


def test_without_read_scope_a_task_id_is_neither_confirmed_nor_denied(secured, auth_tokens):
    api = secured()
    real = call(api, "POST", "/v1/tasks", auth_tokens.headers("all")).json()["id"]
    for method, path in [("GET", "/v1/tasks/{id}"), ("POST", "/v1/tasks/{id}/cancel")]:
        for headers in (None, auth_tokens.headers("submitter")):
            answers = [call(api, method, path.format(id=i), headers) for i in (real, MISSING_ID)]
            assert answers[0].status_code == answers[1].status_code in (401, 403)
            strip = [{k: v for k, v in a.json().items() if k != "instance"} for a in answers]
            assert strip[0] == strip[1]
    # The same calls with the scope do tell them apart.
    assert call(api, "GET", f"/v1/tasks/{real}", auth_tokens.headers("reader")).status_code == 200
    problem(call(api, "GET", f"/v1/tasks/{MISSING_ID}", auth_tokens.headers("reader")), 404)


def test_open_routes_need_no_token(secured):
    api = secured()
    for path in ("/healthz", "/readyz", "/openapi.json", "/metrics", "/"):
        assert api.get(path).status_code == 200, path


def test_metrics_can_require_an_admin_token(secured, auth_tokens):
    api = secured(metrics_require_token=True)
    problem(api.get("/metrics"), 401)
    problem(api.get("/metrics", headers=auth_tokens.headers("reader")), 403)
    r = api.get("/metrics", headers=auth_tokens.headers("admin"))
    assert r.status_code == 200 and "conveyor_http_requests_total" in r.text
    # Refusals are counted like any answer.
    assert 'code="401",method="GET",route="/metrics"' in r.text


def test_tokens_rotate_without_a_restart(secured, auth_tokens):
    api = secured()
    old = auth_tokens.headers("all")
    assert api.get("/v1/tasks", headers=old).status_code == 200
    auth_tokens["all"] = tokens.generate_token()  # rotate: the old one is gone
    auth_tokens.write({"all": list(tokens.SCOPES)})
    wait_for(lambda: api.get("/v1/tasks", headers=old).status_code == 401, timeout=5)
    assert api.get("/v1/tasks", headers=auth_tokens.headers("all")).status_code == 200


def test_a_broken_tokens_file_keeps_the_last_good_tokens_and_a_missing_one_admits_nobody(
    secured, auth_tokens
):
    api = secured()
    good = auth_tokens.headers("reader")
    auth_tokens.path.write_text('{"tokens": [{"name": "x", "sha256": "nothex", "scopes": []}]}')
    time.sleep(1.2)  # past the watcher's check interval
    assert api.get("/v1/tasks", headers=good).status_code == 200
    auth_tokens.path.unlink()
    wait_for(lambda: api.get("/v1/tasks", headers=good).status_code == 401, timeout=5)
    assert api.get("/healthz").status_code == 200


def test_auth_off_only_when_asked_explicitly(secured, monkeypatch):
    api = secured(auth_enabled=False)
    assert api.post("/v1/tasks", json=BODIES["/v1/tasks"]).status_code == 202
    assert api.get("/v1/stats").status_code == 200
    monkeypatch.setenv("CONVEYOR_AUTH_ENABLED", "false")
    assert Settings.from_env().auth_enabled is False
    monkeypatch.setenv("CONVEYOR_AUTH_ENABLED", "flase")  # a typo must not turn auth off
    with pytest.raises(ValueError, match="CONVEYOR_AUTH_ENABLED"):
        Settings.from_env()
    monkeypatch.delenv("CONVEYOR_AUTH_ENABLED")
    assert Settings.from_env().auth_enabled is True


def test_idempotency_keys_are_scoped_to_the_token(secured, auth_tokens):
    api = secured()
    body = BODIES["/v1/tasks"]
    first = api.post("/v1/tasks", json=body, headers={**auth_tokens.headers("all"), "Idempotency-Key": "k"})
    again = api.post("/v1/tasks", json=body, headers={**auth_tokens.headers("all"), "Idempotency-Key": "k"})
    other = api.post("/v1/tasks", json=body, headers={**auth_tokens.headers("other"), "Idempotency-Key": "k"})
    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 202)
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]


@pytest.mark.parametrize(
    ("doc", "pointer"),
    [
        ({"tokens": [{"name": "a", "sha256": "0" * 64, "scopes": ["tasks:everything"]}]}, "/tokens/0/scopes"),
        ({"tokens": [{"name": "a", "sha256": "abc", "scopes": ["tasks:read"]}]}, "/tokens/0/sha256"),
        ({"tokens": [{"sha256": "0" * 64, "scopes": ["tasks:read"]}]}, "/tokens/0/name"),
        (
            {
                "tokens": [
                    {"name": "a", "sha256": "0" * 64, "scopes": ["tasks:read"]},
                    {"name": "a", "sha256": "1" * 64, "scopes": ["tasks:read"]},
                ]
            },
            "/tokens/1/name",
        ),
        ({"token": []}, "tokens"),
    ],
)
def test_a_bad_tokens_file_is_refused_naming_the_field(doc, pointer):
    with pytest.raises(ValueError, match=pointer):
        tokens.TokenSet.from_document(doc)


def test_the_tokens_file_holds_hashes_and_is_private(tmp_path):
    token = tokens.generate_token()
    path = tmp_path / "tokens.json"
    tokens.write_tokens_file(
        path, tokens.TokenSet([tokens.TokenEntry("ci", tokens.hash_token(token), frozenset([tokens.READ]))])
    )
    assert token not in path.read_text()
    assert json.loads(path.read_text())["tokens"][0]["sha256"] == tokens.hash_token(token)
    assert path.stat().st_mode & 0o777 == 0o600
    found = tokens.load(path).find(token)
    assert found is not None and found.name == "ci"
    assert tokens.load(path).find(token + "x") is None
