"""Scopes come from the matched route: every route of the real app (walked, so a new one
cannot slip through), crossed with every kind of caller and with path variants, answers
what docs/SECURITY.md's "Scopes" table says, and nothing else."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from api.auth import METRICS, NONE, Authenticator, AuthMiddleware, ScopedMount, ScopedRoute, declared_scope
from api.ratelimit import RateLimiter
from conveyor import tokens
from tests.conftest import ROOT
from tests.security.test_auth import BODIES, problem

ANY = "any"
CALLERS = [None, "submitter", "reader", "admin", "metadata", "all"]  # no token, one scope each, all
HELD = {
    "submitter": {tokens.SUBMIT},
    "reader": {tokens.READ},
    "admin": {tokens.ADMIN},
    "metadata": {tokens.READ_METADATA},
    "all": set(tokens.SCOPES),
}


def documented() -> dict[tuple[str, str], str]:
    """(method, path) -> scope, from the table in docs/SECURITY.md "Scopes"."""
    text = (ROOT / "docs" / "SECURITY.md").read_text()
    section = text[text.index("## Scopes") : text.index("## Answers")]
    table: dict[tuple[str, str], str] = {}
    for method, path, scope in re.findall(r"^\| (`\w+`|any) \| `([^`]+)`[^|]* \| ([^|]+) \|$", section, re.M):
        declared = re.match(r"`([\w:-]+)`", scope)
        table[(method.strip("`"), path)] = declared.group(1) if declared else scope.split()[0]
    return table


def walked(routes: list[BaseRoute]) -> dict[tuple[str, str], str | None]:
    """(method, path) -> declared scope (None: declares none) for every route of the app."""
    found: dict[tuple[str, str], str | None] = {}
    for route in routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                found[(method, route.path)] = declared_scope(route)
        elif isinstance(route, Mount):
            found[(ANY, route.path or "/")] = declared_scope(route)
        else:
            found[(type(route).__name__, str(route))] = declared_scope(route)
    return found


def expected_table(app: Starlette) -> dict[tuple[str, str], str]:
    table = walked(app.routes)
    undeclared = [key for key, scope in table.items() if scope is None]
    assert not undeclared, f"routes that declare no scope: {undeclared}"
    doc = documented()
    # HEAD comes with every GET route; the doc lists the GET.
    want = {**doc, **{("HEAD", p): s for (m, p), s in doc.items() if m == "GET"}}
    assert table == want, "the routes and docs/SECURITY.md's Scopes table disagree"
    return {k: v for k, v in table.items() if v is not None}


def needed(declared: str, metrics_require_token: bool) -> str | None:
    if declared == METRICS:
        return tokens.ADMIN if metrics_require_token else None
    return None if declared == NONE else declared


def allowed(caller: str | None, scope: str | None) -> bool:
    if scope is None:
        return True
    held = HELD.get(caller or "", set())
    return scope in held or (scope == tokens.READ and tokens.READ_METADATA in held)


def concrete(path: str, task_id: str) -> str:
    return "/" if path == "/" else path.replace("{id}", task_id)


def send(api: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    method = "GET" if method == ANY else method
    body = BODIES.get(path.removeprefix("http://testserver")) if method == "POST" else None
    # The changes stream lasts until the client leaves: asked to end at once instead.
    params = {"seconds": "0"} if path.endswith("/v1/events") else None
    return api.request(method, path, json=body, headers=headers, params=params)


def refused(r: Any, status: int) -> dict[str, Any]:
    """The problem document (empty for HEAD, which has no body)."""
    if r.request.method == "HEAD":
        assert r.status_code == status and r.headers["content-type"].startswith("application/problem+json")
        return {}
    return problem(r, status)


# Each variant of a route's path, and what it must answer whoever calls: None means
# "no route of the API" (404/405 from the console's files, never the route itself).
VARIANTS = {
    "%0A": lambda p: p + "%0A",
    "%0D": lambda p: p + "%0D",
    "%00": lambda p: p + "%00",
    "%0A-inside": lambda p: p.replace("/", "/%0A", 1) if p != "/" else "/%0A",
    "%7F": lambda p: p + "%7F",
    "trailing-slash": lambda p: p + "/",
    "doubled-slash": lambda p: "/" + p,
    "upper-case": lambda p: p.upper(),
}
CONTROL = {"%0A", "%0D", "%00", "%0A-inside", "%7F"}


@pytest.mark.parametrize("metrics_require_token", [False, True])
def test_every_route_answers_the_documented_scope_matrix(secured, auth_tokens, metrics_require_token):
    api = secured(metrics_require_token=metrics_require_token, rate_limit="off", auth_failure_limit="off")
    table = expected_table(api.app)
    task_id = api.post("/v1/tasks", json=BODIES["/v1/tasks"], headers=auth_tokens.headers("all")).json()["id"]
    # Terminal, so its event stream (a GET that lasts until then) answers at once.
    api.post(f"/v1/tasks/{task_id}/cancel", headers=auth_tokens.headers("all"))
    for (method, template), declared in sorted(table.items()):
        if metrics_require_token and declared != METRICS:
            continue  # the switch changes only /metrics; the rest ran with it off
        scope = needed(declared, metrics_require_token)
        path = concrete(template, task_id)
        for caller in CALLERS:
            headers = auth_tokens.headers(caller) if caller else {}
            r = send(api, method, path, headers)
            where = (method, path, caller)
            if allowed(caller, scope):
                assert r.status_code not in (400, 401, 403, 429) and r.status_code < 500, (where, r.text)
            elif caller is None:
                refused(r, 401)
            else:
                assert refused(r, 403).get("required_scope", scope) == scope, where
            for name, variant in VARIANTS.items():
                # Absolute, so the client keeps a leading "//" as a path, not a host.
                r = send(api, method, "http://testserver" + variant(path), headers)
                where = (method, variant(path), caller)
                if name in CONTROL:
                    assert refused(r, 400).get("errors", [{"pointer": "/path"}])[0]["pointer"] == "/path", (
                        where
                    )
                elif template != "/":
                    # No API route: the console's files answer, the same for every caller.
                    assert r.status_code in (404, 405), (where, r.status_code, r.text)


def test_the_trailing_newline_no_longer_reaches_a_route(secured, auth_tokens):
    """The reproduced bypass: a reader created tasks and read admin routes via a final %0A."""
    api = secured(metrics_require_token=True)
    reader = auth_tokens.headers("reader")
    before = api.get("/v1/tasks", headers=reader).json()["items"]
    for path in ("/v1/tasks%0A", "/v1/tasks/batch%0A"):
        problem(api.post(path, json=BODIES[path.removesuffix("%0A")], headers=reader), 400)
    for path in ("/v1/stats%0A", "/v1/workers%0A"):
        problem(api.get(path, headers=reader), 400)
    problem(api.get("/metrics%0A"), 400)
    assert api.get("/v1/tasks", headers=reader).json()["items"] == before


async def _ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ran")


def _tiny(routes: list[BaseRoute], with_auth: bool = True) -> TestClient:
    auth = Authenticator(None, RateLimiter("off"))
    middleware = [Middleware(AuthMiddleware, auth=auth)] if with_auth else []
    return TestClient(Starlette(routes=routes, middleware=middleware))


def test_a_route_without_a_declared_scope_is_refused():
    api = _tiny([ScopedRoute("/open", _ok, scope=NONE), Route("/plain", _ok), Mount("/files", app=_ok)])
    assert api.get("/open").text == "ran"
    for path in ("/plain", "/files/x"):
        r = api.get(path)
        assert r.status_code == 403 and r.text != "ran", path
    # And the walk above names it, so the matrix test fails for such a route.
    assert walked(api.app.routes)[("GET", "/plain")] is None


def test_a_scoped_route_refuses_a_request_not_authorized_for_it():
    # No auth middleware at all: the route itself refuses.
    api = _tiny([ScopedRoute("/open", _ok, scope=NONE)], with_auth=False)
    r = api.get("/open")
    assert r.status_code == 403 and r.text != "ran"


def test_a_route_cannot_declare_an_unknown_scope():
    with pytest.raises(ValueError, match="route /x: scope must be one of"):
        ScopedRoute("/x", _ok, scope="tasks:everything")
    with pytest.raises(ValueError, match="mount /files: scope must be one of"):
        ScopedMount("/files", _ok, scope="")


def test_the_openapi_document_asks_for_a_token_exactly_where_a_route_does(secured):
    api = secured()
    doc = api.get("/openapi.json").json()
    declared = walked(api.app.routes)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            scope = declared[(method.upper(), path)]
            open_ = operation.get("security", doc["security"]) == []
            assert open_ == (scope == NONE), (method, path, scope)
