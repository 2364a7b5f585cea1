"""payloadSchema rules: patterns run by RE2 (refused at load when RE2 can't run them), no
remote $ref, formats checked, and a time budget per validation."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from referencing.exceptions import Unresolvable

from conveyor import payloadschema
from conveyor.registry import Registry, TaskType, load_manifests
from tests.conftest import EXAMPLES

OLD_EMAIL_PATTERN = '^[^\\s,;<>"]+@[^\\s,;<>"]+$'  # quadratic under backtracking


def registry_of(schema: dict) -> Registry:
    doc = {"taskTypes": [TaskType("t", "echo", payload_schema=schema).to_json()]}
    return Registry.from_document(doc)


@pytest.mark.parametrize(
    "schema",
    [
        {"properties": {"a": {"type": "string", "pattern": "^(a+)\\1$"}}},  # back-reference
        {"properties": {"a": {"pattern": "^(?=x)"}}},  # look-ahead
        {"properties": {"a": {"pattern": "(?<!x)y"}}},  # look-behind
        {"patternProperties": {"^(?!internal)": {"type": "string"}}},
        {"$defs": {"d": {"pattern": "(a)\\1"}}},
    ],
)
def test_a_pattern_re2_cannot_run_makes_the_type_invalid_at_load(schema):
    tasktype = registry_of(schema)["t"]
    assert not tasktype.ready and tasktype.reason == "InvalidSchema"
    assert "RE2" in tasktype.message and "not supported" in tasktype.message


def test_manifests_load_the_same_way(tmp_path: Path):
    (tmp_path / "t.yaml").write_text(
        "apiVersion: conveyor.dev/v1alpha1\nkind: TaskType\nmetadata: {name: t}\n"
        "spec:\n  payloadSchema: {properties: {a: {pattern: '(a)\\1'}}}\n"
    )
    assert load_manifests(tmp_path)["t"].reason == "InvalidSchema"
    assert all(t.ready for t in load_manifests(EXAMPLES).values())  # every shipped schema loads


@pytest.mark.parametrize(
    "ref",
    ["https://schemas.example.com/payload.json", "http://169.254.169.254/latest/meta-data/", "other.json#/x"],
)
def test_a_remote_ref_is_refused_at_load_and_never_fetched(monkeypatch, ref):
    def no_network(*args, **kwargs):
        raise AssertionError("a payloadSchema $ref was fetched")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    tasktype = registry_of({"properties": {"a": {"$ref": ref}}})["t"]
    assert not tasktype.ready and "remote references are not fetched" in tasktype.message
    # Even a validator built past the load-time check resolves nothing remotely.
    compiled = payloadschema.validator({"$ref": ref})
    with pytest.raises(Unresolvable):
        payloadschema.iter_errors(compiled, {"a": 1})


def test_local_refs_and_meta_schemas_resolve():
    local = {"$defs": {"s": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/s"}}}
    embedded = {
        "$id": "https://conveyor.example/p",
        "properties": {"a": {"$ref": "name"}},
        "$defs": {"n": {"$id": "name", "type": "string"}},
    }
    meta = {"properties": {"a": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}}
    for schema in (local, embedded, meta):
        assert payloadschema.schema_errors(schema) == [], schema
    registry = registry_of(embedded)
    assert registry["t"].ready
    assert registry.validate_payload("t", {"a": "x"}) == []
    assert registry.validate_payload("t", {"a": 1})[0]["pointer"] == "/payload/a"


def test_formats_are_enforced():
    webhook = load_manifests(EXAMPLES)
    assert webhook.validate_payload("webhook", {"url": "https://hooks.example.com/a?b=1#c"}) == []
    for bad in ("https://exa mple.com/", "https://[::1/", "https://x/%zz"):
        errors = webhook.validate_payload("webhook", {"url": bad})
        assert [e["pointer"] for e in errors] == ["/payload/url"], bad
    formats = registry_of(
        {
            "properties": {
                "r": {"format": "regex"},
                "u": {"format": "uri-reference"},
                "d": {"format": "date-time"},
                "e": {"format": "email"},
            }
        }
    )
    assert (
        formats.validate_payload("t", {"r": "^a+$", "u": "../x", "d": "2026-01-01T00:00:00Z", "e": "a@b"})
        == []
    )
    errors = formats.validate_payload("t", {"r": "(a)\\1", "u": "a b", "d": "yesterday", "e": "nobody"})
    assert [e["pointer"] for e in errors] == ["/payload/d", "/payload/e", "/payload/r", "/payload/u"]


def test_pattern_keywords_match_as_jsonschema_does_but_in_linear_time():
    schema = {
        "type": "object",
        "patternProperties": {"^x-": {"type": "string"}},
        "additionalProperties": False,
        "properties": {"email": {"type": "string", "maxLength": 254, "pattern": OLD_EMAIL_PATTERN}},
    }
    registry = registry_of(schema)
    assert registry.validate_payload("t", {"x-a": "s", "email": "a@b"}) == []
    assert [e["pointer"] for e in registry.validate_payload("t", {"x-a": 1})] == ["/payload/x-a"]
    assert registry.validate_payload("t", {"y": 1})[0]["message"].startswith("'y' does not match any")
    # 200,000 characters against the quadratic pattern: Python's re needs minutes.
    start = time.perf_counter()
    errors = registry.validate_payload("t", {"email": "@" * 200_000 + " "})
    assert time.perf_counter() - start < 0.25
    assert {e["pointer"] for e in errors} == {"/payload/email"}


def test_validation_has_a_time_budget(monkeypatch):
    registry = load_manifests(EXAMPLES)
    monkeypatch.setattr(payloadschema, "BUDGET_SECONDS", 0.0)
    errors = registry.validate_payload("email", {"to": ["a@b"], "subject": "s", "text": "t"})
    assert errors == [{"pointer": "/payload", "message": "validation took longer than its 0 s budget"}]
    monkeypatch.setattr(payloadschema, "BUDGET_SECONDS", 0.5)
    assert registry.validate_payload("email", {"to": ["a@b"], "subject": "s", "text": "t"}) == []
