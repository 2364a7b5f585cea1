"""The API's request spans, in process: the caller's trace goes on, a malformed header only
starts a new one, and the submit names its task."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from api.app import create_app
from tests.conftest import AUTH_HEADERS

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def client(world, spans):
    # Tracing is on (the spans fixture), so create_app instruments the app.
    return TestClient(create_app(world.engine, CollectorRegistry()), headers=AUTH_HEADERS)


def server_spans(spans):
    return [s for s in spans.get_finished_spans() if s.kind.name == "SERVER"]


def test_a_submit_continues_the_callers_trace_and_names_its_task(client, spans, world):
    answer = client.post(
        "/v1/tasks",
        json={"type": "obs-probe", "payload": {}},
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"},
    )
    assert answer.status_code == 202, answer.text
    [request] = server_spans(spans)
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert format(request.parent.span_id, "016x") == PARENT
    assert request.attributes["conveyor.task_id"] == answer.json()["id"]
    # The message carries the request's span as the parent of the attempt.
    [message] = world.broker.receive(1, 0)
    assert message.trace_context["traceparent"] == (
        f"00-{TRACE_ID}-{format(request.context.span_id, '016x')}-01"
    )


@pytest.mark.parametrize("header", ["garbage", f"00-{'0' * 32}-{PARENT}-01", "00-xyz-abc-01" + "x" * 600])
def test_a_malformed_traceparent_starts_a_new_trace(client, spans, world, header):
    answer = client.post(
        "/v1/tasks", json={"type": "obs-probe", "payload": {}}, headers={"traceparent": header}
    )
    assert answer.status_code == 202, answer.text
    [request] = server_spans(spans)
    assert request.parent is None and request.context.trace_id != 0
    [message] = world.broker.receive(1, 0)
    assert format(request.context.trace_id, "032x") in message.trace_context["traceparent"]
