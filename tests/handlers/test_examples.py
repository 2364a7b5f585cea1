"""The example TaskTypes: valid schemas whose examples pass them, handlers that exist, and
an API that rejects bad payloads naming the field."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from api.app import create_app
from conveyor.registry import load_manifests, schema_errors
from tests.conftest import AUTH_HEADERS, EXAMPLES, ROOT
from worker import handlers

BUILT_IN = ["email", "image-resize", "data-export", "webhook"]


@pytest.fixture(scope="module")
def registry():
    return load_manifests(EXAMPLES)


@pytest.fixture(scope="module")
def shared_api(shared_runtime):
    """The real app over the shared runtime (registry: k8s/examples); validation only."""
    with TestClient(create_app(shared_runtime.engine, CollectorRegistry()), headers=AUTH_HEADERS) as client:
        yield client


@pytest.mark.parametrize("name", BUILT_IN)
def test_example_schema_is_valid_and_its_examples_pass_it(registry, name):
    tasktype = registry[name]
    assert tasktype.ready and tasktype.handler == name
    assert schema_errors(tasktype.payload_schema) == []
    examples = tasktype.payload_schema["examples"]
    assert examples
    for example in examples:
        assert registry.validate_payload(name, example) == []


def test_every_example_names_a_registered_handler(registry):
    missing = [t.name for t in registry.values() if handlers.get(t.handler) is None]
    assert missing == []
    assert set(BUILT_IN) <= set(handlers.names())


@pytest.mark.parametrize(
    ("name", "payload", "pointer"),
    [
        ("email", {"to": ["a@example.com"], "subject": "s"}, "/payload"),  # no body
        ("email", {"to": ["a@example.com", "nope"], "subject": "s", "text": "t"}, "/payload/to/1"),
        (
            "email",
            {"to": ["a@example.com"], "subject": "a\nBcc: x@evil.test", "text": "t"},
            "/payload/subject",
        ),
        ("image-resize", {"key": "a.png", "width": 0, "height": 10}, "/payload/width"),
        ("image-resize", {"key": "a.png", "width": 10, "height": 10, "size": 3}, "/payload"),
        ("data-export", {"rows": [{}], "format": "xml"}, "/payload/format"),
        ("data-export", {"tasks": {"status": "lost"}}, "/payload/tasks/status"),
        ("data-export", {"format": "csv"}, "/payload"),  # neither rows nor tasks
        ("webhook", {"url": "ftp://example.com/x"}, "/payload/url"),
        ("webhook", {"url": "https://e.com", "headers": {"X-A": "1\r\nHost: evil"}}, "/payload/headers/X-A"),
        ("webhook", {"url": "https://e.com", "timeout": 600}, "/payload/timeout"),
        ("webhook", {"url": "https://e.com", "json": {}, "body": "x"}, "/payload"),
    ],
)
def test_api_rejects_bad_payloads_naming_the_field(shared_api, name, payload, pointer):
    r = shared_api.post("/v1/tasks", json={"type": name, "payload": payload})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert pointer in [e["pointer"] for e in r.json()["errors"]]


def test_a_module_from_your_own_image_is_loaded(tmp_path, monkeypatch):
    """The docs' recipe: a module on PYTHONPATH, named in CONVEYOR_HANDLER_MODULES."""
    package = tmp_path / "acme_handlers_docs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "avatars.py").write_text(
        "from worker.handlers import handler\n\n"
        "@handler('acme-docs-avatar')\n"
        "def run(payload, ctx):\n"
        "    return {'size': ctx.options.get('size')}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    handlers.load("acme_handlers_docs.avatars")
    fn = handlers.get("acme-docs-avatar")
    assert fn is not None and "acme-docs-avatar" in handlers.names()


def test_handler_docs_name_every_setting_the_handlers_read():
    docs = (ROOT / "docs" / "HANDLERS.md").read_text()
    code = "".join((ROOT / "worker" / "handlers" / f).read_text() for f in ("mail.py", "webhook.py"))
    names = set(re.findall(r"CONVEYOR_SMTP_[A-Z_]+", code))
    assert len(names) >= 8 and [n for n in sorted(names) if f"`{n}`" not in docs] == []
    for handler_name in BUILT_IN:
        assert f"### `{handler_name}`" in docs
