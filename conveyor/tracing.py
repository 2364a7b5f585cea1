"""OpenTelemetry traces: a submit's trace goes on through SQS into the worker's attempt.

Export is off unless the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, and ``OTEL_SDK_DISABLED=true`` turns it off
whatever else is set. Off, nothing is instrumented and every function here returns at its
first line: no span, no context carried, nothing to pay per task.

On, a process sends its spans over OTLP/HTTP (protobuf), the standard ``OTEL_*`` variables
(service name, resource attributes, sampler, headers, batch delays) applying as usual. The
submit's context is injected by the configured propagators (W3C ``traceparent`` by default)
into a carrier that travels as the message's attributes; the worker extracts it and runs
each attempt in a span that is its child.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

log = logging.getLogger("conveyor.tracing")

# Health checks and scrapes every few seconds would drown the traces worth reading.
DEFAULT_EXCLUDED_URLS = "healthz,readyz,metrics"

_tracer: trace.Tracer | None = None  # None: tracing is off in this process
_provider: Any = None
_NULL: AbstractContextManager[None] = nullcontext()


def export_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for spans to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def enabled() -> bool:
    return _tracer is not None


def provider() -> Any:
    return _provider


def setup(component: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Turn tracing on for this process if the environment asks for it: an OTLP/HTTP
    exporter, the botocore instrumentation, and ``conveyor-<component>`` as the service
    name unless ``OTEL_SERVICE_NAME`` says otherwise. Returns whether tracing is on."""
    if _tracer is not None or not export_configured(environ):
        return enabled()
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip()
    if protocol not in ("", "http/protobuf"):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: Conveyor exports "
            "OTLP over HTTP (http/protobuf, the collector's port 4318)"
        )
    configure_propagation(environ)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if not (environ.get("OTEL_PYTHON_STARLETTE_EXCLUDED_URLS") or environ.get("OTEL_PYTHON_EXCLUDED_URLS")):
        # Read by the Starlette instrumentation when api/app.py imports it, after this.
        os.environ["OTEL_PYTHON_STARLETTE_EXCLUDED_URLS"] = DEFAULT_EXCLUDED_URLS
    # Resource.create lets OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over this default.
    resource = Resource.create({SERVICE_NAME: f"conveyor-{component}"})
    sdk = TracerProvider(resource=resource, sampler=NoBackgroundCalls.from_env())
    sdk.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(sdk)
    BotocoreInstrumentor().instrument(tracer_provider=sdk)
    use(sdk)
    log.info("tracing on: exporting spans as %s", resource.attributes.get(SERVICE_NAME))
    return True


def configure_propagation(environ: Mapping[str, str] = os.environ) -> None:
    """Carry the W3C trace context only, unless ``OTEL_PROPAGATORS`` names others. The SDK's
    default adds W3C baggage: arbitrary key-values from any caller, which Conveyor does not
    use and would otherwise copy onto every message and into every handler's context."""
    if not environ.get("OTEL_PROPAGATORS", "").strip():
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        propagate.set_global_textmap(TraceContextTextMapPropagator())


def use(tracer_provider: Any) -> None:
    """Trace through ``tracer_provider`` (None: off). ``setup`` calls it; tests call it with
    a provider that keeps spans in memory."""
    global _tracer, _provider
    _provider = tracer_provider
    _tracer = None if tracer_provider is None else tracer_provider.get_tracer("conveyor")


def flush(timeout_millis: int = 5000) -> None:
    """Export the spans still buffered (a process about to end)."""
    if _provider is not None and hasattr(_provider, "force_flush"):
        _provider.force_flush(timeout_millis)


def _sampler_from_env() -> Any:
    from opentelemetry.sdk.trace import sampling

    # The SDK's own reading of OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG.
    return sampling._get_from_env_or_default()


class NoBackgroundCalls:
    """A sampler that drops AWS calls made outside any request or attempt (the worker's long
    polls and heartbeats, the API's sweeper and readiness pings: a root span every few
    seconds), and defers everything else to the configured sampler."""

    def __init__(self, delegate: Any) -> None:
        self.delegate = delegate

    @classmethod
    def from_env(cls) -> Any:
        return cls(_sampler_from_env())

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> Any:
        from opentelemetry.sdk.trace.sampling import Decision, SamplingResult

        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoBackgroundCalls{{{self.delegate.get_description()}}}"


def inject() -> dict[str, str]:
    """The current trace context as a carrier for a message ({} when off or outside a span)."""
    if _tracer is None:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def annotate(**attributes: str | int) -> None:
    """Add ``conveyor.<key>`` attributes to the current span (a submit request's, say)."""
    if _tracer is None:
        return
    span = trace.get_current_span()
    for key, value in attributes.items():
        span.set_attribute(f"conveyor.{key}", value)


@contextmanager
def _attempt(
    tracer: trace.Tracer, task_id: str, task_type: str, attempt: int, carrier: Mapping[str, str]
) -> Iterator[trace.Span]:
    parent = propagate.extract(carrier) if carrier else None
    with tracer.start_as_current_span(
        f"run {task_type}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "conveyor.task.id": task_id,
            "conveyor.task.type": task_type,
            "conveyor.task.attempt": attempt,
            "messaging.system": "aws_sqs",
            "messaging.operation.type": "process",
        },
        # The outcome says how the attempt ended; an exception never escapes the handler call.
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def attempt_span(
    task_id: str, task_type: str, attempt: int, carrier: Mapping[str, str]
) -> AbstractContextManager[Any]:
    """The span of one attempt, current inside, a child of the context in ``carrier``; a
    shared do-nothing context manager when off."""
    if _tracer is None:
        return _NULL
    return _attempt(_tracer, task_id, task_type, attempt, carrier)


def record_outcome(span: Any, outcome: str, error_type: str | None = None) -> None:
    """Set the attempt's outcome (succeeded, failed, retried, ...) on ``span`` (None: off)."""
    if span is None:
        return
    span.set_attribute("conveyor.task.outcome", outcome)
    if error_type:
        # The type only: an error's message may quote the payload; the task record has it.
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, error_type[:128]))
