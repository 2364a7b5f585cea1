"""Log lines: JSON objects with the task, trace and span ids, or today's text."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from conveyor import logs, tracing
from conveyor.engine import Submission
from conveyor.settings import Settings
from tests.conftest import wait_for


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """The root logger's handlers as they were, after the test."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield io.StringIO()
    root.handlers[:] = saved
    root.setLevel(level)


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_json_line_is_one_object_with_known_keys(output):
    logs.configure("INFO", "json", output)
    log = logging.getLogger("tests.obs")
    log.info("hello %s", "there", extra={"color_message": "\x1b[1mhello", "payload": {"a": 1}})
    [line] = lines(output)
    assert line["message"] == "hello there"
    assert line["level"] == "INFO" and line["logger"] == "tests.obs"
    assert line["time"].endswith("Z") and line["time"][10] == "T"
    # Fields a library passes as `extra` are not copied into the line.
    assert set(line) == {"time", "level", "logger", "message"}


def test_lines_inside_an_attempt_carry_its_task_id_whoever_logs(output):
    logs.configure("INFO", "json", output)
    with logs.task_context("01TASK", "echo"):
        logging.getLogger("botocore.retries").warning("throttled")
    logging.getLogger("x").info("outside")
    inside, outside = lines(output)
    assert (inside["task_id"], inside["task_type"]) == ("01TASK", "echo")
    assert "task_id" not in outside


def test_lines_inside_a_span_carry_its_trace_and_span_ids(output, spans):
    logs.configure("INFO", "json", output)
    with tracing.provider().get_tracer("t").start_as_current_span("work") as span:
        logging.getLogger("x").info("traced")
    logging.getLogger("x").info("untraced")
    traced, untraced = lines(output)
    assert traced["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert traced["span_id"] == format(span.get_span_context().span_id, "016x")
    assert len(traced["trace_id"]) == 32 and len(traced["span_id"]) == 16
    assert "trace_id" not in untraced and "span_id" not in untraced


def test_json_lines_scrub_credentials_from_messages_and_tracebacks(output):
    logs.configure("INFO", "json", output)
    log = logging.getLogger("x")
    try:
        raise RuntimeError("upstream said: Authorization: Bearer abc.SECRET-1")
    except RuntimeError:
        log.exception("calling with token=SECRET-2")
    text = output.getvalue()
    assert "SECRET-1" not in text and "SECRET-2" not in text
    [line] = lines(output)
    assert "RuntimeError" in line["exc_info"] and "[redacted]" in line["exc_info"]


def test_text_stays_as_it_was(output):
    logs.configure("INFO", "text", output)
    with logs.task_context("01TASK", "echo"):
        logging.getLogger("conveyor.worker").info("done")
    line = output.getvalue().rstrip("\n")
    assert line.endswith(" INFO conveyor.worker done task_id=01TASK")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_the_format_comes_from_the_environment_and_a_typo_is_refused(monkeypatch, output):
    assert Settings().log_format == "text"  # `conveyor run`
    monkeypatch.setenv("CONVEYOR_LOG_FORMAT", "json")
    assert Settings.from_env().log_format == "json"
    logs.configure("INFO", " JSON ", output)
    with pytest.raises(ValueError, match="CONVEYOR_LOG_FORMAT must be one of text, json, not 'jsno'"):
        logs.configure("INFO", "jsno", output)


def test_a_handler_thread_logs_with_the_task_and_trace_of_its_attempt(world, spans, output):
    logs.configure("INFO", "json", output)
    task, _ = world.engine.submit(Submission("obs-probe", {}))
    world.start()
    wait_for(lambda: world.engine.get(task.id).status.terminal, timeout=10)
    world.stop()
    [attempt] = [s for s in spans.get_finished_spans() if s.name == "run obs-probe"]
    [line] = [x for x in lines(output) if x["message"] == "probe ran"]
    assert line["task_id"] == task.id and line["task_type"] == "obs-probe"
    assert line["trace_id"] == format(attempt.context.trace_id, "032x")
    assert line["span_id"] == format(attempt.context.span_id, "016x")
