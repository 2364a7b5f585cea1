"""RFC 9457 problem details: every error the API returns, as application/problem+json."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from conveyor.errors import (
    Conflict,
    Duplicate,
    IdempotencyConflict,
    InvalidCursor,
    NotFound,
    Unavailable,
    ValidationError,
)

log = logging.getLogger("conveyor.api")

MEDIA_TYPE = "application/problem+json"

TITLES = {
    400: "Malformed request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


class Problem(Exception):
    """Raise anywhere in a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        slug: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or TITLES.get(status, "error").lower().replace(" ", "-")
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra


def problem_response(request: Request, problem: Problem) -> Response:
    body: dict[str, Any] = {
        "type": f"/problems/{problem.slug}",
        "title": TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
    }
    if problem.errors:
        body["errors"] = problem.errors
    body.update(problem.extra)
    return Response(
        json.dumps(body), status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers
    )


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(request, exc)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    return problem_response(request, Problem(exc.status_code, str(exc.detail), headers=headers))


async def on_conveyor_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, InvalidCursor):
        problem = Problem(400, str(exc), "invalid-cursor", errors=exc.errors)
    elif isinstance(exc, ValidationError):
        problem = Problem(422, str(exc), "validation", errors=exc.errors)
    elif isinstance(exc, NotFound):
        problem = Problem(404, "no task with this id", "not-found")
    elif isinstance(exc, Duplicate):
        problem = Problem(
            409,
            str(exc),
            "duplicate",
            errors=[{"pointer": "/unique_key", "message": "an active task of the type holds this key"}],
            existing_task=exc.existing,
        )
    elif isinstance(exc, IdempotencyConflict):
        problem = Problem(409, str(exc), "idempotency-conflict")
    elif isinstance(exc, Conflict):
        problem = Problem(409, str(exc), "invalid-state")
    elif isinstance(exc, Unavailable):
        problem = Problem(
            503,
            f"the task backend is unavailable, try again shortly ({exc})",
            "backend-unavailable",
            headers={"Retry-After": str(exc.retry_after)},
        )
    else:
        return await on_unexpected(request, exc)
    return problem_response(request, problem)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    # Logged with its traceback for us; the caller gets no internals.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request, Problem(500, "an internal error occurred; it has been logged", "internal")
    )
