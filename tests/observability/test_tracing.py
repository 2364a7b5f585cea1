"""Traces in one process: the submit's context travels with the message (memory and SQS
brokers alike), each attempt is a span that is its child, and with export off nothing is
traced or carried."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.propagate import get_global_textmap, set_global_textmap
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from conveyor import lifecycle, tracing
from conveyor.aws import AwsBackend
from conveyor.engine import Submission
from conveyor.memory import MemoryBroker
from conveyor.metrics import WorkerMetrics
from conveyor.model import Status
from tests.conftest import wait_for
from tests.observability.handlers import SEEN
from worker.runtime import Worker

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "false"}, True),
    ],
)
def test_export_is_on_only_when_an_endpoint_is_set_and_the_sdk_not_disabled(env, on):
    assert tracing.export_configured(env) is on


def test_setup_without_an_endpoint_leaves_tracing_off():
    assert tracing.setup("worker", {}) is False
    assert not tracing.enabled()


def test_setup_refuses_a_protocol_it_cannot_speak():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL='grpc' is not supported"):
        tracing.setup("worker", env)
    assert not tracing.enabled()


@pytest.fixture(params=["sqs", "memory"])
def broker(request):
    if request.param == "memory":
        return MemoryBroker(visibility_timeout=30)
    return AwsBackend(request.getfixturevalue("settings_factory")()).broker()


def test_the_trace_context_travels_with_the_message(broker):
    carrier = {"traceparent": TRACEPARENT, "tracestate": "vendor=x"}
    broker.send("t-one", "echo", 0, carrier)
    assert broker.send_many([("t-b1", "echo", 0, None), ("t-b2", "echo", 0, None)], carrier) == []
    broker.send("t-none", "echo")
    got: dict[str, dict[str, str]] = {}
    for _ in range(10):
        for m in broker.receive(10, 1):
            got[m.task_id] = m.trace_context
        if len(got) == 4:
            break
    assert got == {"t-one": carrier, "t-b1": carrier, "t-b2": carrier, "t-none": {}}


def test_with_tracing_off_nothing_is_carried_and_no_span_is_made(world):
    assert tracing.inject() == {}
    assert tracing.attempt_span("t", "echo", 1, {"traceparent": TRACEPARENT}) is tracing.attempt_span(
        "u", "echo", 1, {}
    )  # one shared do-nothing context manager
    task, _ = world.engine.submit(Submission("obs-probe", {}))
    [message] = world.broker.receive(1, 0)
    assert message.trace_context == {}
    world.broker.change_visibility(message.receipt, 0)
    world.start()
    wait_for(lambda: world.engine.get(task.id).status.terminal, timeout=10)
    assert world.engine.get(task.id).status is Status.SUCCEEDED


def test_an_attempt_is_a_span_under_the_submit(world, spans):
    SEEN.clear()
    tracer = tracing.provider().get_tracer("test")
    with tracer.start_as_current_span("POST /v1/tasks", kind=SpanKind.SERVER) as request:
        task, _ = world.engine.submit(Submission("obs-probe", {}))
    assert request.attributes["conveyor.task_id"] == task.id  # the request names its task
    world.start()
    wait_for(lambda: world.engine.get(task.id).status.terminal, timeout=10)
    world.stop()
    [attempt] = [s for s in spans.get_finished_spans() if s.name == "run obs-probe"]
    assert attempt.kind is SpanKind.CONSUMER
    assert attempt.context.trace_id == request.context.trace_id
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
    assert attempt.attributes["conveyor.task.id"] == task.id
    assert attempt.attributes["conveyor.task.type"] == "obs-probe"
    assert attempt.attributes["conveyor.task.attempt"] == 1
    assert attempt.attributes["conveyor.task.outcome"] == "succeeded"
    assert attempt.status.status_code is StatusCode.UNSET
    # The sync handler ran in a thread, inside the attempt's span.
    assert [(task.id, attempt.context.trace_id, attempt.context.span_id)] == SEEN


def test_a_batch_submit_carries_the_context_to_every_task(world, spans):
    tracer = tracing.provider().get_tracer("test")
    with tracer.start_as_current_span("POST /v1/tasks:batch") as request:
        tasks = world.engine.submit_batch([Submission("obs-probe", {}) for _ in range(3)])
    world.start()
    wait_for(lambda: all(world.engine.get(t.id).status.terminal for t in tasks), timeout=10)
    world.stop()
    attempts = [s for s in spans.get_finished_spans() if s.name == "run obs-probe"]
    assert sorted(s.attributes["conveyor.task.id"] for s in attempts) == sorted(t.id for t in tasks)
    assert {s.parent.span_id for s in attempts} == {request.context.span_id}


def test_each_attempt_has_its_span_and_its_outcome(world, spans):
    tracer = tracing.provider().get_tracer("test")
    with tracer.start_as_current_span("submit") as request:
        task, _ = world.engine.submit(Submission("obs-flaky", {"fail": True}))
    world.start()
    done = wait_for(lambda: (t := world.engine.get(task.id)).status.terminal and t, timeout=10)
    world.stop()
    assert done.status is Status.FAILED and done.attempts == 2
    attempts = sorted(
        (s for s in spans.get_finished_spans() if s.name == "run obs-flaky"),
        key=lambda s: s.attributes["conveyor.task.attempt"],
    )
    assert [s.attributes["conveyor.task.outcome"] for s in attempts] == ["retried", "failed"]
    assert all(s.status.status_code is StatusCode.ERROR for s in attempts)
    assert all(s.attributes["error.type"] == "ConnectionError" for s in attempts)
    # The retry is the same message, hidden and received again: still the submit's trace.
    assert {s.parent.span_id for s in attempts} == {request.context.span_id}


def test_a_message_without_context_starts_a_new_trace(world, spans):
    task, _ = world.engine.submit(Submission("obs-probe", {}))  # no span current
    world.start()
    wait_for(lambda: world.engine.get(task.id).status.terminal, timeout=10)
    world.stop()
    [attempt] = [s for s in spans.get_finished_spans() if s.name == "run obs-probe"]
    assert attempt.parent is None and attempt.context.is_valid


def test_background_aws_calls_are_not_traced_but_those_inside_a_span_are():
    sampler = tracing.NoBackgroundCalls(ALWAYS_ON)
    provider = TracerProvider(sampler=sampler)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("poll", kind=SpanKind.CLIENT) as orphan:
        assert not orphan.is_recording()
    with tracer.start_as_current_span("run", kind=SpanKind.CONSUMER) as attempt:
        assert attempt.is_recording()
        with tracer.start_as_current_span("DynamoDB.UpdateItem", kind=SpanKind.CLIENT) as call:
            assert call.is_recording()
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as request:
        assert request.is_recording()
    assert "NoBackgroundCalls" in sampler.get_description()
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_message_sent_again_keeps_its_trace_context(world):
    """A paused type's or a saturated type's message is replaced by a fresh copy: the copy
    still belongs to the submit's trace."""
    world.broker.send("t-held", "obs-probe", 0, {"traceparent": TRACEPARENT})
    [message] = world.broker.receive(1, 0)
    worker = Worker(world.engine, WorkerMetrics(CollectorRegistry()))
    try:
        asyncio.run(worker.messages.do(message, lifecycle.Resend(0, "type paused or disabled")))
    finally:
        worker.io.shutdown()
        worker.attempts.shutdown()
    copies = world.broker.receive(10, 1)
    assert [(m.task_id, m.trace_context) for m in copies] == [("t-held", {"traceparent": TRACEPARENT})]


def test_only_the_trace_context_is_carried_unless_propagators_are_configured(spans):
    saved = get_global_textmap()
    try:
        for environ, carried in [
            ({}, {"traceparent"}),
            ({"OTEL_PROPAGATORS": "tracecontext,baggage"}, {"traceparent", "baggage"}),
        ]:
            set_global_textmap(saved)  # the SDK's default: trace context and baggage
            tracing.configure_propagation(environ)
            token = context.attach(baggage.set_baggage("user", "anything a caller sent"))
            try:
                with tracing.provider().get_tracer("t").start_as_current_span("submit"):
                    assert set(tracing.inject()) == carried, environ
            finally:
                context.detach(token)
    finally:
        set_global_textmap(saved)
