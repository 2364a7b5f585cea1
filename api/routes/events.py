"""``GET /v1/events``: task state changes as server-sent events, from the process's one
change feed (conveyor/feed.py); and ``/v1/session``, the cookie that lets a browser's
EventSource (which cannot send an Authorization header) open the event streams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from api import live, query
from api.auth import NONE, SESSION_COOKIE, ScopedRoute
from api.problems import Problem
from api.routes.tasks import _readable, _redacted
from api.state import State
from conveyor import tokens
from conveyor.feed import Change, parse_id
from conveyor.model import Status

# The cookie lives as long as the browser session, and at most this long.
SESSION_SECONDS = 8 * 3600


def _filters(request: Request) -> tuple[Status | None, str | None]:
    errors: list[dict[str, Any]] = []
    status, task_type = query.status_and_type(request.query_params, errors)
    if errors:
        raise Problem(422, "query parameters are invalid", "validation", errors=errors)
    return status, task_type


MAX_SECONDS = 3600


def _seconds(request: Request) -> float | None:
    """``seconds``: end the stream after this long (0 to 3600; a client resumes with its
    last id); without it the stream lasts until the client leaves."""
    return query.seconds(request.query_params.get("seconds"), "seconds", MAX_SECONDS)


def _resume_from(request: Request) -> tuple[int, str] | None:
    # EventSource sends the header on reconnect; a new EventSource can only say it in the query.
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        return parse_id(raw)
    except ValueError as exc:
        raise Problem(
            422,
            "Last-Event-ID is not an id this stream sent",
            "validation",
            errors=[{"pointer": "/headers/Last-Event-ID", "message": "an id from this stream"}],
        ) from exc


def _text(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


async def events(request: Request) -> Response:
    status, task_type = _filters(request)
    after = _resume_from(request)
    seconds = _seconds(request)
    state: State = request.app.state.conveyor
    feed = state.feed

    def shown(change: Change) -> ServerSentEvent | None:
        task = change.task
        if (status is not None and task.status is not status) or (task_type and task.type != task_type):
            return None
        data = _readable(task)
        if data is None:
            return None
        return ServerSentEvent(data=_text(_redacted(request, data)), event=change.kind, id=change.id)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        async with feed.subscribe() as sub:
            # Replayed and subscribed without an await in between: nothing falls in the gap.
            missed = feed.replay(after) if after is not None else []
            if missed is None:
                yield ServerSentEvent(data=_text({"reason": "too old to resume: reload"}), event="reset")
                missed = []
            for change in missed:
                if (event := shown(change)) is not None:
                    yield event
            loop = asyncio.get_running_loop()
            deadline = None if seconds is None else loop.time() + seconds
            while True:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return
                changes = await sub.changes(left)
                if changes is None:  # this client fell behind what the feed keeps
                    yield ServerSentEvent(data=_text({"reason": "fell behind: reload"}), event="reset")
                    sub.after = feed.seq
                    continue
                for change in changes:
                    if (event := shown(change)) is not None:
                        yield event

    return EventSourceResponse(stream(), ping=live.PING_SECONDS, headers={"Cache-Control": "no-store"})


async def open_session(request: Request) -> Response:
    """Keep the caller's bearer token in an HttpOnly, SameSite=Strict cookie that only the
    event-stream routes accept (api/auth.py): an EventSource can then authenticate
    without the token in its URL."""
    header = request.headers.get("authorization", "")
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    token = header.split(" ", 1)[1].strip() if " " in header else ""
    if token:
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=SESSION_SECONDS,
            path=None,  # the browser's default: the directory of /v1/session, behind any prefix
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
    return response


async def close_session(request: Request) -> Response:
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.set_cookie(SESSION_COOKIE, "", max_age=0, path=None, httponly=True, samesite="strict")
    return response


routes = [
    ScopedRoute("/v1/events", events, methods=["GET"], name="task-changes", scope=tokens.READ, cookie=True),
    ScopedRoute("/v1/session", open_session, methods=["POST"], name="open-session", scope=tokens.READ),
    ScopedRoute("/v1/session", close_session, methods=["DELETE"], name="close-session", scope=NONE),
]
