"""``data-export``: write rows to S3 as CSV or JSON.

The rows come from the payload (``rows``) or from Conveyor's own task records
(``tasks: {type, status, limit}``), read page by page through the TaskStore. The whole
file is built in memory and written with one PutObject, so ``tasks.limit`` is capped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from conveyor.errors import NotFound, PermanentError
from conveyor.model import Status
from worker.handlers import handler
from worker.handlers.context import Context
from worker.handlers.storage import bucket

MAX_TASK_ROWS = 100_000
PAGE_SIZE = 100
TASK_COLUMNS = [
    "id", "type", "status", "attempts", "max_attempts", "created_at", "updated_at",
    "started_at", "finished_at", "run_at", "worker", "error", "payload", "result",
]  # fmt: skip
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


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


def _cell(value: Any) -> Any:
    # CSV has no nesting: objects and lists are written as JSON text.
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return value


def to_csv(rows: list[dict[str, Any]], columns: list[str] | None) -> bytes:
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _cell(row.get(column)) for column in columns})
    return out.getvalue().encode()


def to_json(rows: list[dict[str, Any]], columns: list[str] | None) -> bytes:
    if columns is not None:
        rows = [{column: row.get(column) for column in columns} for row in rows]
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode()


@handler("data-export")
def data_export(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    fmt = str(payload.get("format", "csv"))
    if fmt not in CONTENT_TYPES:
        raise PermanentError(f"format: must be one of {sorted(CONTENT_TYPES)}")
    if ("rows" in payload) == ("tasks" in payload):
        raise PermanentError("rows, tasks: give exactly one source")
    if "rows" in payload:
        rows = payload["rows"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise PermanentError("rows: must be an array of objects")
        source = "payload"
    else:
        rows = list(task_rows(ctx, dict(payload["tasks"] or {})))
        source = "tasks"
    columns = [str(c) for c in payload["columns"]] if payload.get("columns") else None
    if columns is None and source == "tasks":
        columns = TASK_COLUMNS
    data = (to_csv if fmt == "csv" else to_json)(rows, columns)

    name, store = bucket(ctx, payload.get("bucket"))
    key = str(payload.get("key") or f"exports/{ctx.task_id}.{fmt}")
    try:
        store.put(key, data, CONTENT_TYPES[fmt])
    except NotFound as exc:
        raise PermanentError(f"bucket: no bucket {name!r}") from exc
    return {
        "bucket": name,
        "key": key,
        "rows": len(rows),
        "bytes": len(data),
        "format": fmt,
        "source": source,
    }
