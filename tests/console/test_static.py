"""The console's files as the API serves them: no browser needed."""

from __future__ import annotations

import re

import pytest

from tests.console.conftest import STATIC, documented_operations, undocumented

ORIGIN = "http://127.0.0.1:8000"
STATIC_PATHS = {"/", "/index.html", "/app.js"}


def test_console_is_served_at_the_root_with_its_modules(api):
    page = api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text
    # Every file the page and its modules load is served with a type the browser accepts.
    modules = {"app.js"}
    seen: set[str] = set()
    while modules - seen:
        name = sorted(modules - seen)[0]
        seen.add(name)
        r = api.get(f"/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"].split(";")[0] == "text/javascript", name
        base = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        for dep in re.findall(r'from "\./([^"]+)"', r.text):
            modules.add(base + dep)
        for dep in re.findall(r'from "\.\./([^"]+)"', r.text):
            modules.add(dep)
    assert {"app.js", "api.js", "dom.js", "ui.js", "views/tasks.js"} <= seen
    assert api.get("/style.css").headers["content-type"].startswith("text/css")
    # The API keeps its own paths: the console mount does not shadow them.
    assert api.get("/v1/stats").headers["content-type"] == "application/json"
    missing = api.get("/no-such-file.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_console_loads_nothing_from_elsewhere():
    """Offline and air-gapped: no URL with a host in any console file (the SVG namespace
    is a name, not a download), and a CSP that would block one anyway."""
    hosts = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.I)
    for path in STATIC.rglob("*"):
        if path.is_file():
            found = [u for u in hosts.findall(path.read_text()) if u != "http://www.w3.org"]
            assert not found, f"{path.name} refers to {found}"
    html = (STATIC / "index.html").read_text()
    assert "default-src 'self'" in html and "connect-src 'self'" in html
    assert "@import" not in (STATIC / "style.css").read_text()
    assert "@font-face" not in (STATIC / "style.css").read_text()


OPENAPI = {
    "paths": {
        "/v1/tasks": {
            "get": {"parameters": [{"name": "status", "in": "query"}, {"name": "cursor", "in": "query"}]},
            "post": {},
        },
        "/v1/tasks/{id}/cancel": {"post": {"parameters": [{"name": "id", "in": "path"}]}},
    }
}


@pytest.mark.parametrize(
    ("method", "url", "ok"),
    [
        ("GET", f"{ORIGIN}/v1/tasks?status=failed&cursor=abc", True),
        ("POST", f"{ORIGIN}/v1/tasks", True),
        ("POST", f"{ORIGIN}/v1/tasks/01ABC/cancel", True),
        ("GET", f"{ORIGIN}/app.js", True),
        ("GET", f"{ORIGIN}/", True),
        ("GET", f"{ORIGIN}/v1/tasks?sort=desc", False),  # undocumented query parameter
        ("DELETE", f"{ORIGIN}/v1/tasks", False),  # undocumented method
        ("GET", f"{ORIGIN}/v1/tasks/01ABC/cancel", False),
        ("POST", f"{ORIGIN}/v1/tasks/01ABC/cancel/now", False),  # a template matches one segment
        ("GET", f"{ORIGIN}/v1/queues", False),
        ("GET", f"{ORIGIN}/other.js", False),  # not a console file
        ("GET", "https://cdn.example.com/app.js", False),  # another origin
    ],
)
def test_request_audit_flags_what_openapi_does_not_document(method, url, ok):
    assert documented_operations(OPENAPI)
    assert (undocumented([(method, url)], OPENAPI, ORIGIN, STATIC_PATHS) == []) is ok
