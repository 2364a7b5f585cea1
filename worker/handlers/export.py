"""``data-export``: write rows to S3 as CSV or JSON.

The rows come from the payload (``rows``) or from Conveyor's own task records
(``tasks: {type, status, limit}``), read a page at a time through the TaskStore. The file
is streamed to S3 (one part of ``PART_SIZE`` in memory at a time, multipart above it), so
memory does not grow with the export; its size is capped by ``options.maxBytes``.

Task records hold every caller's payloads and results: exporting them needs a submitter
whose token holds ``tasks:read``, as reading them through the API would.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from conveyor import tokens
from conveyor.errors import NotFound, PermanentError
from conveyor.model import Status
from worker.handlers import handler
from worker.handlers.context import Context
from worker.handlers.storage import bucket, check_key, positive_int_option, write_new

MAX_TASK_ROWS = 100_000
# A task record is at most 400 KB (DynamoDB's item cap): 20 a page keeps a page under 8 MB.
PAGE_SIZE = 20
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
CHUNK = 64 * 1024
PROGRESS_EVERY = 100  # rows between progress reports
TASK_COLUMNS = [
    "id", "type", "status", "attempts", "max_attempts", "created_at", "updated_at",
    "started_at", "finished_at", "run_at", "worker", "error", "payload", "result",
]  # fmt: skip
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
# A spreadsheet runs a cell beginning with one of these as a formula (OWASP CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def check_may_read_tasks(ctx: Context) -> None:
    """Refuse unless this task's submitter could read task records through the API."""
    if ctx.store is None:
        raise RuntimeError("this worker has no task store")
    me = ctx.store.get(ctx.task_id, consistent=True)
    scopes = me.submitter_scopes if me is not None else None
    if scopes is None or tokens.READ not in scopes:
        raise PermanentError(
            f"tasks: exporting task records needs a token with the {tokens.READ} scope; "
            "this task was submitted without it"
        )


def task_rows(ctx: Context, spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Task records, newest first, as the API shows them."""
    if ctx.store is None:
        raise RuntimeError("this worker has no task store")
    try:
        status = Status(spec["status"]) if spec.get("status") else None
    except ValueError as exc:
        raise PermanentError(f"tasks.status: {exc}") from exc
    limit = int(spec.get("limit", 1000))
    if not 1 <= limit <= MAX_TASK_ROWS:
        raise PermanentError(f"tasks.limit: must be between 1 and {MAX_TASK_ROWS}")
    cursor: str | None = None
    left = limit
    while left > 0:
        ctx.raise_if_cancelled()  # one check a page keeps a long export cancellable
        page = ctx.store.query(status, spec.get("type") or None, min(PAGE_SIZE, left), cursor)
        for task in page.items[:left]:
            row = task.to_json()
            yield {column: row.get(column) for column in TASK_COLUMNS}
        left -= len(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return


def escape_formula(text: str) -> str:
    """A text cell a spreadsheet would run as a formula, made inert by a leading quote."""
    return "'" + text if text.startswith(FORMULA_START) else text


def _cell(value: Any) -> Any:
    # CSV has no nesting: objects and lists are written as JSON text.
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if isinstance(value, str):
        return escape_formula(value)
    return value


def _chunks(pieces: Iterable[str]) -> Iterator[bytes]:
    """Text pieces regrouped into chunks of about CHUNK bytes."""
    buffer: list[str] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= CHUNK:
            yield "".join(buffer).encode()
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode()


def csv_lines(rows: Iterable[dict[str, Any]], columns: list[str]) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([escape_formula(c) for c in columns])  # column names come from payloads too
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


def json_pieces(rows: Iterable[dict[str, Any]], columns: list[str] | None) -> Iterator[str]:
    yield "["
    for i, row in enumerate(rows):
        if columns is not None:
            row = {column: row.get(column) for column in columns}
        yield ("," if i else "") + json.dumps(row, ensure_ascii=False, separators=(",", ":"))
    yield "]"


def _all_columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _capped(chunks: Iterable[bytes], limit: int, counter: list[int]) -> Iterator[bytes]:
    for chunk in chunks:
        counter[0] += len(chunk)
        if counter[0] > limit:
            raise PermanentError(
                f"the export is larger than {limit} bytes (options.maxBytes); "
                "narrow it (tasks.limit, columns)"
            )
        yield chunk


@handler("data-export")
def data_export(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    fmt = str(payload.get("format", "csv"))
    if fmt not in CONTENT_TYPES:
        raise PermanentError(f"format: must be one of {sorted(CONTENT_TYPES)}")
    if ("rows" in payload) == ("tasks" in payload):
        raise PermanentError("rows, tasks: give exactly one source")
    limit = positive_int_option(ctx, "maxBytes", DEFAULT_MAX_BYTES)
    name, store = bucket(ctx, payload.get("bucket"))
    key = check_key(ctx, str(payload.get("key") or f"exports/{ctx.task_id}.{fmt}"), "key", "write")
    columns = [str(c) for c in payload["columns"]] if payload.get("columns") else None
    if "rows" in payload:
        given = payload["rows"]
        if not isinstance(given, list) or not all(isinstance(r, dict) for r in given):
            raise PermanentError("rows: must be an array of objects")
        source = "payload"
        if fmt == "csv" and columns is None:
            columns = _all_columns(given)  # the payload is in memory already
    else:
        check_may_read_tasks(ctx)
        source = "tasks"
        columns = columns or TASK_COLUMNS

    def write(overwrite: bool, metadata: dict[str, str]) -> tuple[int, int]:
        count = [0]
        written = [0]

        def rows() -> Iterator[dict[str, Any]]:
            spec = dict(payload["tasks"] or {}) if source == "tasks" else {}
            source_rows = given if source == "payload" else task_rows(ctx, spec)
            # Out of the rows there are (given) or at most asked for (tasks.limit).
            expected = len(given) if source == "payload" else max(1, int(spec.get("limit", 1000)))
            for row in source_rows:
                count[0] += 1
                if count[0] % PROGRESS_EVERY == 0:  # the reporter throttles writes; this, the calls
                    ctx.progress(min(count[0] / expected, 0.99), f"{count[0]} rows")
                yield row

        pieces = csv_lines(rows(), columns or []) if fmt == "csv" else json_pieces(rows(), columns)
        store.upload(
            key,
            _capped(_chunks(pieces), limit, written),
            CONTENT_TYPES[fmt],
            overwrite=overwrite,
            metadata=metadata,
        )
        return count[0], written[0]

    try:
        rows_written, size = write_new(ctx, store, f"s3://{name}/{key}", key, "key", write)
    except NotFound as exc:
        raise PermanentError(f"bucket: no bucket {name!r}") from exc
    ctx.progress(1.0, f"{rows_written} rows, {size} bytes written")
    return {"bucket": name, "key": key, "rows": rows_written, "bytes": size, "format": fmt, "source": source}
