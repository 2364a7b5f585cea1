"""Log lines: text (``make run``) or one JSON object per line (the chart), each with the task
id, and the trace and span ids when there are any.

The task id comes from the context: ``task_context`` sets it for the length of an attempt, so
every line logged meanwhile carries it, whoever logs it (the worker, a handler, a library),
including from the handler's thread (the worker copies the context into it).
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from conveyor import redact

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_task: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("conveyor_task", default=None)

# The keys a JSON line may have. Fixed, so that a field passed as ``extra`` by a library
# (uvicorn's ``color_message``, say) never adds noise or something secret to the output.
JSON_FIELDS = (
    "time",
    "level",
    "logger",
    "message",
    "task_id",
    "task_type",
    "trace_id",
    "span_id",
    "exc_info",
    "stack_info",
)


@contextmanager
def task_context(task_id: str, task_type: str) -> Iterator[None]:
    """Every record logged inside carries ``task_id`` and ``task_type``."""
    token = _task.set((task_id, task_type))
    try:
        yield
    finally:
        _task.reset(token)


class ContextFilter(logging.Filter):
    """Adds ``task_id``/``task_type`` (unless the record has them) and, inside a recorded span,
    ``trace_id``/``span_id`` in the W3C hex form."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _task.get()
        if current is not None and getattr(record, "task_id", None) is None:
            record.task_id, record.task_type = current
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


class TextFormatter(logging.Formatter):
    """One line per record, key=value, with the task id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        task_id = getattr(record, "task_id", None)
        return f"{line} task_id={task_id}" if task_id else line


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line with the keys of JSON_FIELDS that the record has."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # RFC 3339 in UTC with milliseconds: what log pipelines parse without configuration.
        stamp = datetime.fromtimestamp(record.created, UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"

    def formatException(self, ei: Any) -> str:
        # The JSON formatter formats exc_info itself (not the filter's scrubbed exc_text), so
        # the exception text is scrubbed here as well.
        return redact.scrub(logging.Formatter.formatException(self, ei))

    def formatStack(self, stack_info: str) -> str:
        return redact.scrub(logging.Formatter.formatStack(self, stack_info))

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        for key in [k for k in log_data if k not in JSON_FIELDS]:
            del log_data[key]


def formatter(fmt: str) -> logging.Formatter:
    """The formatter for ``CONVEYOR_LOG_FORMAT``; a clear error for anything else."""
    if fmt == "json":
        return JsonLineFormatter()
    if fmt == "text":
        return TextFormatter(TEXT_FORMAT)
    raise ValueError(f"CONVEYOR_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {fmt!r}")


def configure(level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Send every record to ``stream`` (stderr) in ``fmt``, through the context filter and
    the secret filter (conveyor.redact)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt.strip().lower()))
    handler.addFilter(ContextFilter())
    handler.addFilter(redact.SecretFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # botocore logs every retry at INFO/DEBUG; keep it quiet unless asked.
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
