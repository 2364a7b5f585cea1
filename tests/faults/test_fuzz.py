"""schemathesis against /openapi.json, with auth: no 5xx on any route, every response as
documented (status, content type, headers, body schema), and every secured operation
refusing a request without a token (``ignored_auth``). Then hypothesis with hostile JSON
(NaN, Infinity, 1e999, lone surrogates, long integers, deep nesting, extreme times): no
500, and no stored record that breaks a read.

Examples per operation: ``CONVEYOR_FUZZ_EXAMPLES`` (default 15; `make chaos` runs 100).
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from schemathesis import checks
from starlette.testclient import TestClient

from conveyor.bootstrap import build
from tests.conftest import AUTH_HEADERS

EXAMPLES = int(os.environ.get("CONVEYOR_FUZZ_EXAMPLES", "15"))
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.ignored_auth,
]


@pytest.fixture
def api_schema(settings_factory):
    from api.app import create_app

    # A small limit on payloads keeps the generated 413s cheap; the rate limit is per test.
    app = create_app(
        build(settings_factory(max_payload_bytes=4096, rate_limit="off")).engine, CollectorRegistry()
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schemathesis.hook
def map_body(context, body):
    """Random strings are never a known task type: make half the submissions name one,
    so the accepting paths (202, Location, the Task schema) are fuzzed too."""
    path = context.operation.path if context.operation else ""
    if path in ("/v1/tasks", "/v1/tasks/batch") and isinstance(body, dict):
        items = body.get("tasks") if path.endswith("batch") else [body]
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and "type" in item and len(str(item["type"])) % 2 == 0:
                item["type"] = "echo"
    return body


@schema.parametrize()
@pytest.mark.timeout(900)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_every_route_answers_as_documented(case):
    case.call_and_validate(headers=AUTH_HEADERS, checks=CHECKS)


def test_an_integral_float_max_attempts_is_stored_as_an_integer(api):
    """Found by the run above: 97.0 passed validation, was stored as "97.0", and every
    later read of the task failed with a 500."""
    r = api.post("/v1/tasks", json={"type": "echo", "payload": {}, "max_attempts": 7.0})
    assert r.status_code == 202 and r.json()["max_attempts"] == 7
    assert api.get(f"/v1/tasks/{r.json()['id']}").json()["max_attempts"] == 7
    assert api.get("/v1/tasks").status_code == 200


# -- hostile JSON: values Python's json accepts but nothing downstream can serve -------------

HOSTILE_LEAVES = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    '"\\ud800"',
    '"x\\udfff"',
    "9" * 5000,
    "-" + "1" * 21,
    "1" + "0" * 400 + ".5",
]
TIMES = [
    '"0001-01-01T00:00:00+23:59"',
    '"0001-01-01T00:00:00Z"',
    '"9999-12-31T23:59:59-23:59"',
    '"9999-12-31T23:59:59Z"',
    '"2020-02-30T00:00:00Z"',
]


def _hostile_json() -> st.SearchStrategy[str]:
    """JSON text (as the wire carries it) mixing ordinary values with hostile ones."""
    leaves = st.one_of(
        st.sampled_from(HOSTILE_LEAVES),
        st.sampled_from(["null", "true", "0", "-0", "1.5e3", '""']),
        st.integers().map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.text(max_size=8).map(json.dumps),
        st.integers(50, 1100).map(lambda n: "[" * n + "]" * n),
    )
    keys = st.one_of(st.text(max_size=6).map(json.dumps), st.just('"\\ud800"'))
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
            st.dictionaries(keys, inner, max_size=4).map(
                lambda d: "{" + ",".join(f"{k}:{v}" for k, v in d.items()) + "}"
            ),
        ),
        max_leaves=12,
    )


@st.composite
def hostile_submits(draw: st.DrawFn) -> str:
    fields = {"type": draw(st.sampled_from(['"echo"', '"text-transform"', '"webhook"', '"sleep"']))}
    fields["payload"] = draw(_hostile_json())
    extra = st.sampled_from([*HOSTILE_LEAVES, "5", "0", "1"])
    for name, values in (
        ("delay_seconds", extra),
        ("run_at", st.sampled_from(TIMES)),
        ("max_attempts", extra),
    ):
        if draw(st.booleans()):
            fields[name] = draw(values)
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"


@pytest.fixture
def memory_api():
    from api.app import create_app
    from tests.conftest import EXAMPLES, make_settings
    from tests.support.engines import memory_engine

    settings = make_settings(tasktypes=str(EXAMPLES), rate_limit="off")
    engine = memory_engine(settings)
    with TestClient(
        create_app(engine, CollectorRegistry()), raise_server_exceptions=False, headers=AUTH_HEADERS
    ) as client:
        yield client


@settings(
    max_examples=EXAMPLES * 4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=hostile_submits(), batch=st.booleans())
def test_hostile_json_never_gives_a_500_nor_a_record_that_breaks_a_read(memory_api, body, batch):
    path, text = (
        ("/v1/tasks/batch", '{"tasks":[{"type":"echo"},' + body + "]}") if batch else ("/v1/tasks", body)
    )
    r = memory_api.post(path, content=text.encode(), headers={"content-type": "application/json"})
    assert r.status_code in (200, 202, 413, 422), (r.status_code, r.text[:300])
    if r.status_code >= 400:
        problem = r.json()
        assert r.headers["content-type"] == "application/problem+json" and problem["errors"][0]["pointer"]
    for params in ({}, {"type": "echo"}, {"status": "queued"}, {"status": "queued", "type": "echo"}):
        listed = memory_api.get("/v1/tasks", params=params)
        assert listed.status_code == 200, (params, listed.text[:300])
    for item in memory_api.get("/v1/tasks", params={"limit": 200}).json()["items"]:
        assert memory_api.get(f"/v1/tasks/{item['id']}").status_code == 200
