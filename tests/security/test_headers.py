"""Every answer carries the security headers: routes, refusals, the console's files,
Starlette's own 404/405, and a 500 from an unexpected error."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.app import CONTENT_SECURITY_POLICY
from api.auth import NONE, ScopedRoute

WANT = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


async def _boom(request: Request) -> Response:
    raise RuntimeError("an unexpected failure")


async def _own_headers(request: Request) -> Response:
    return Response("x", headers={"X-Frame-Options": "ALLOWALL", "Content-Security-Policy": "default-src *"})


def test_csp_forbids_framing_and_matches_the_consoles_own_policy():
    from api.app import STATIC

    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    meta = (STATIC / "index.html").read_text()
    # The header says at least what the page's <meta> says (frame-ancestors needs a header).
    assert CONTENT_SECURITY_POLICY.removesuffix("; frame-ancestors 'none'") in " ".join(meta.split())


CASES = [
    ("GET", "/healthz", None, 200),
    ("GET", "/", None, 200),
    ("GET", "/app.js", None, 200),
    ("GET", "/metrics", None, 200),
    ("GET", "/v1/tasks", "reader", 200),
    ("GET", "/v1/tasks", None, 401),
    ("GET", "/v1/stats", "reader", 403),
    ("GET", "/v1/tasks/nope", "reader", 400),
    ("GET", "/v1/tasks%0A", None, 400),
    ("GET", "/no-such-file", None, 404),
    ("DELETE", "/v1/tasks", "all", 405),
    ("GET", "/boom", None, 500),
    ("GET", "/own-headers", None, 200),
]


def test_every_answer_carries_the_security_headers(secured, auth_tokens):
    api = secured()
    api.app.router.routes.insert(0, ScopedRoute("/boom", _boom, scope=NONE))
    api.app.router.routes.insert(0, ScopedRoute("/own-headers", _own_headers, scope=NONE))
    for method, path, token, status in CASES:
        r = api.request(method, path, headers=auth_tokens.headers(token) if token else {})
        assert r.status_code == status, (method, path, r.text)
        for name, value in WANT.items():
            assert r.headers.get_list(name) == [value], (path, name, r.headers.get_list(name))
