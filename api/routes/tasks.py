"""/v1/tasks: submit, batch, get (``?wait=``), the event stream, list, cancel, retry."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from ulid import ULID

from api import live, query, schemas
from api.auth import SCOPES, ScopedRoute, sees_payloads
from api.body import check, parse, read_body, read_json, validator
from api.offload import run_blocking
from api.problems import Problem
from api.state import State
from conveyor import tokens
from conveyor.engine import Submission, idempotency_digest
from conveyor.model import Priority, Status, Task, from_rfc3339

log = logging.getLogger("conveyor.api")
_submit = validator(schemas.SUBMIT)
_MAX_KEY = 255


def _state(request: Request) -> State:
    state: State = request.app.state.conveyor
    return state


def _run_at(value: str | None, pointer: str) -> datetime | None:
    try:
        return from_rfc3339(value)
    except (ValueError, OverflowError) as exc:
        # RFC 3339 allows year 0001 with a +23:59 offset: before datetime's year 1 in UTC.
        raise Problem(
            422,
            f"run_at is out of range: {exc}",
            "validation",
            errors=[{"pointer": f"{pointer}/run_at", "message": "a time datetime can hold, in UTC"}],
        ) from exc


def _submission(
    data: dict[str, Any],
    max_payload: int,
    scopes: frozenset[str] | None,
    pointer: str = "",
    submitter: str | None = None,
) -> Submission:
    payload = data.get("payload", {})
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > max_payload:
        raise Problem(
            413,
            f"payload is {size} bytes; the limit is {max_payload}",
            "payload-too-large",
            errors=[{"pointer": f"{pointer}/payload", "message": f"at most {max_payload} bytes"}],
        )
    return Submission(
        type=data["type"],
        payload=payload,
        delay_seconds=data.get("delay_seconds"),
        run_at=_run_at(data.get("run_at"), pointer),
        # JSON Schema's "integer" admits 97.0; store an int (found by the schemathesis run).
        max_attempts=int(data["max_attempts"]) if data.get("max_attempts") is not None else None,
        scopes=scopes,
        notify_url=(data.get("notify") or {}).get("url"),
        submitter=submitter,
        priority=Priority(data["priority"]) if data.get("priority") else None,
        unique_key=data.get("unique_key"),
    )


REDACTED = ("payload", "result")


def _redacted(request: Request, data: dict[str, Any]) -> dict[str, Any]:
    """A served task as this caller may see it: without payload and result unless its token
    holds tasks:read (a tasks:read-metadata or tasks:admin-only token sees the rest)."""
    if sees_payloads(request):
        return data
    for key in REDACTED:
        data.pop(key, None)
    for event in data.get("events") or ():
        event.pop("data", None)  # what a handler reports may come from the payload
    data["redacted"] = list(REDACTED)
    return data


def _shown(request: Request, task: Task) -> dict[str, Any]:
    return _redacted(request, _served(task))


def _task_response(request: Request, task: Task, status_code: int) -> JSONResponse:
    return JSONResponse(
        _shown(request, task), status_code=status_code, headers={"Location": f"/v1/tasks/{task.id}"}
    )


def _task_id(request: Request) -> str:
    """The {id} path parameter as a canonical ULID; anything else never reaches the store."""
    raw = request.path_params["id"]
    try:
        return str(ULID.from_str(raw))
    except ValueError as exc:
        raise Problem(
            400,
            "the task id in the path is not a task id (a 26-character ULID)",
            "malformed-id",
            errors=[
                {"pointer": "/path/id", "message": "a ULID: 26 characters of 0-9 and A-Z without I, L, O, U"}
            ],
        ) from exc


def _scopes(request: Request) -> frozenset[str] | None:
    """The caller's scopes (set by the auth middleware), recorded on the task."""
    scopes = request.scope.get(SCOPES)
    return frozenset(scopes) if scopes is not None else None


def idempotency_key(request: Request, state: State, namespace: str = "") -> str | None:
    """The request's Idempotency-Key, checked and scoped to the caller (and to
    ``namespace``, so one key used on two kinds of request names two things); None without one."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= _MAX_KEY:
        raise Problem(
            422,
            f"Idempotency-Key must be 1 to {_MAX_KEY} characters",
            "validation",
            errors=[{"pointer": "/headers/Idempotency-Key", "message": f"1 to {_MAX_KEY} characters"}],
        )
    return f"{state.principal(request)}:{namespace}{key}"


def _submitter(request: Request) -> str | None:
    """The token's name, kept on the task: its webhook secret (token.<name>) signs."""
    return _state(request).principal(request) if _scopes(request) is not None else None


def _checked_submission(data: Any, max_payload: int, scopes: frozenset[str] | None) -> Submission:
    check(_submit, data)
    return _submission(data, max_payload, scopes)


def _checked_batch(state: State, data: Any, scopes: frozenset[str] | None) -> list[Submission]:
    check(state.batch_validator, data)
    limit = state.settings.max_payload_bytes
    return [_submission(item, limit, scopes, f"/tasks/{i}") for i, item in enumerate(data["tasks"])]


async def submit(request: Request) -> Response:
    state = _state(request)
    limit = state.settings.max_payload_bytes
    raw = await read_body(request, limit + 64 * 1024)
    # Parse, check, record and send in one hop off the event loop: each hop costs more CPU
    # than parsing and checking a small body.
    key = idempotency_key(request, state)
    task, created = await run_blocking(_recorded, request, state, raw, limit, key)
    if created:
        state.count_submitted(task.type)
    if created or (key is not None and task.idempotency_key == idempotency_digest(key)):
        # The caller's own task (an Idempotency-Key is scoped to the caller): shown whole.
        return JSONResponse(
            task.to_json(), status_code=202 if created else 200, headers={"Location": f"/v1/tasks/{task.id}"}
        )
    # The active task holding the unique key, maybe another caller's: shown as a read would.
    return _task_response(request, task, 200)


def _recorded(request: Request, state: State, raw: bytes, limit: int, key: str | None) -> tuple[Task, bool]:
    data = parse(raw)
    sub = replace(_checked_submission(data, limit, _scopes(request)), submitter=_submitter(request))
    state.log_payload(request, sub.type, sub.payload)
    return state.engine.submit(sub, key, data)


async def submit_batch(request: Request) -> Response:
    state = _state(request)
    settings = state.settings
    data = await read_json(request, (settings.max_payload_bytes + 1024) * settings.max_batch_size + 64 * 1024)
    subs = await run_in_threadpool(_checked_batch, state, data, _scopes(request))
    subs = [replace(sub, submitter=_submitter(request)) for sub in subs]
    for sub in subs:
        state.log_payload(request, sub.type, sub.payload)
    tasks = await run_in_threadpool(state.engine.submit_batch, subs)
    for task in tasks:
        state.count_submitted(task.type)
    return JSONResponse({"items": [t.to_json() for t in tasks]}, status_code=202)


def _encoded(value: Any) -> bytes:
    """What JSONResponse sends; raises for what it cannot encode."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


_UNENCODABLE = (ValueError, TypeError, RecursionError, UnicodeEncodeError)


def _readable(task: Task) -> dict[str, Any] | None:
    """The task as served, or -- for a record written before today's input checks, or
    by another writer -- the record with its payload and result withheld and an error
    saying why; None if even that cannot be served. A read never fails on one record."""
    data = task.to_json()
    try:
        _encoded(data)
        return data
    except _UNENCODABLE as exc:
        log.error("task %s: stored payload or result cannot be served as JSON: %s", task.id, exc)
    why = "the stored payload or result is not valid JSON and is withheld"
    data |= {"payload": None, "result": None, "error": {"type": "UnreadableRecord", "message": why}}
    try:
        _encoded(data)
        return data
    except _UNENCODABLE:
        return None


def _page(tasks: Sequence[Task]) -> list[dict[str, Any]]:
    items = [task.to_json() for task in tasks]
    try:
        _encoded(items)  # one C-speed pass; item by item only when it fails
        return items
    except _UNENCODABLE:
        pass
    kept = []
    for task in tasks:
        data = _readable(task)
        if data is None:
            log.error("task %s left out of a list: its record cannot be served", task.id)
        else:
            kept.append(data)
    return kept


def _served(task: Task) -> dict[str, Any]:
    data = _readable(task)
    if data is None:
        raise Problem(404, f"task {task.id} has a record that cannot be served", "not-found")
    return data


async def deliveries(request: Request) -> Response:
    """The task's completion webhook: its URL, where it stands, and the recorded attempts."""
    task = await run_in_threadpool(_state(request).engine.get, _task_id(request))
    state = task.notify_state.value if task.notify_state else None
    return JSONResponse(
        {
            "id": task.id,
            "url": task.notify_url,
            "state": state,
            "deliveries": [d.to_json() for d in task.deliveries],
        }
    )


async def get_task(request: Request) -> Response:
    wait = live.wait_seconds(request.query_params.get("wait"))
    state = _state(request)
    task = await run_in_threadpool(state.engine.get, _task_id(request))
    if wait and not task.status.terminal:
        live.admit(state.watcher)
        async with state.watcher.subscribe(task) as sub:
            task = await live.until_terminal(sub, task, wait)
    return JSONResponse(_shown(request, task))


async def task_events(request: Request) -> Response:
    """Server-sent events of one task until it is terminal (api/live.py)."""
    cursor = live.Cursor.parse(request.headers.get("last-event-id"))
    state = _state(request)
    task = await run_in_threadpool(state.engine.get, _task_id(request))
    if cursor is not None and task.status.terminal and not live.pending(task, cursor, _served, True)[0]:
        # The client has seen the end: 204 tells an EventSource to stop reconnecting.
        return Response(status_code=204)
    live.admit(state.watcher)

    async def events() -> Any:
        async with state.watcher.subscribe(task) as sub:
            async for event in live.stream(
                sub, task, cursor or live.Cursor(), lambda t: _shown(request, t), sees_payloads(request)
            ):
                yield event

    return EventSourceResponse(events(), ping=live.PING_SECONDS, headers={"Cache-Control": "no-store"})


def _query(request: Request) -> tuple[Status | None, str | None, int, str | None]:
    q = request.query_params
    errors: list[dict[str, Any]] = []
    status, task_type = query.status_and_type(q, errors)
    limit = 50
    if q.get("limit") is not None:
        try:
            limit = int(q["limit"])
            if not 1 <= limit <= 200:
                raise ValueError
        except ValueError:
            errors.append({"pointer": "/query/limit", "message": "must be an integer from 1 to 200"})
    if errors:
        raise Problem(422, "query parameters are invalid", "validation", errors=errors)
    return status, task_type, limit, q.get("cursor") or None


async def list_tasks(request: Request) -> Response:
    status, task_type, limit, cursor = _query(request)
    page = await run_in_threadpool(_state(request).engine.query, status, task_type, limit, cursor)
    items = [_redacted(request, data) for data in _page(page.items)]
    return JSONResponse({"items": items, "next_cursor": page.next_cursor})


async def cancel(request: Request) -> Response:
    task = await run_in_threadpool(_state(request).engine.cancel, _task_id(request))
    return JSONResponse(_shown(request, task))


async def retry(request: Request) -> Response:
    task = await run_in_threadpool(_state(request).engine.retry, _task_id(request))
    return _task_response(request, task, 202)


# Each route's scope is declared here, on the route (docs/SECURITY.md, "Scopes").
routes = [
    ScopedRoute("/v1/tasks", submit, methods=["POST"], name="submit", scope=tokens.SUBMIT),
    ScopedRoute("/v1/tasks", list_tasks, methods=["GET"], name="list", scope=tokens.READ),
    ScopedRoute("/v1/tasks/batch", submit_batch, methods=["POST"], name="batch", scope=tokens.SUBMIT),
    ScopedRoute("/v1/tasks/{id}", get_task, methods=["GET"], name="get", scope=tokens.READ),
    ScopedRoute(
        "/v1/tasks/{id}/events", task_events, methods=["GET"], name="events", scope=tokens.READ, cookie=True
    ),
    ScopedRoute(
        "/v1/tasks/{id}/deliveries", deliveries, methods=["GET"], name="deliveries", scope=tokens.READ
    ),
    ScopedRoute("/v1/tasks/{id}/cancel", cancel, methods=["POST"], name="cancel", scope=tokens.ADMIN),
    ScopedRoute("/v1/tasks/{id}/retry", retry, methods=["POST"], name="retry", scope=tokens.ADMIN),
]
