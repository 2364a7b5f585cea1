"""Handlers for the observability tests: each notes what it saw of the trace and logs a line."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

from worker.handlers import handler
from worker.handlers.context import Context

SEEN: list[tuple[str, int, int]] = []  # (task id, trace id, span id) current in the handler

log = logging.getLogger("tests.observability.handler")


@handler("obs-probe")
def probe(payload: Any, ctx: Context) -> dict[str, Any]:
    """Sync, so it runs in a worker thread: the attempt's context must have come along."""
    span = trace.get_current_span().get_span_context()
    SEEN.append((ctx.task_id, span.trace_id, span.span_id))
    log.info("probe ran")  # a plain logger, not ctx.logger
    if payload.get("fail"):
        raise ConnectionError("probe failure")
    return {"ok": True}
