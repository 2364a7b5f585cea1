"""Query parameters several routes share, checked the same way everywhere: a bad value is a
422 problem naming ``/query/<name>``."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import QueryParams

from api.problems import Problem
from conveyor.model import Status


def seconds(raw: str | None, name: str, maximum: float) -> float | None:
    """A number of seconds from 0 to ``maximum`` (NaN refused); None when absent."""
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
        if not 0 <= value <= maximum:  # also refuses NaN
            raise ValueError
    except ValueError as exc:
        raise Problem(
            422,
            f"{name} must be a number of seconds from 0 to {maximum:g}",
            "validation",
            errors=[{"pointer": f"/query/{name}", "message": f"a number from 0 to {maximum:g}"}],
        ) from exc
    return value


def status_and_type(q: QueryParams, errors: list[dict[str, Any]]) -> tuple[Status | None, str | None]:
    """The ``status`` and ``type`` filters; what is wrong with them goes into ``errors``."""
    status = None
    if q.get("status"):
        try:
            status = Status(q["status"])
        except ValueError:
            errors.append(
                {
                    "pointer": "/query/status",
                    "message": f"must be one of {', '.join(s.value for s in Status)}",
                }
            )
    task_type = q.get("type") or None
    if task_type is not None and len(task_type) > 128:
        errors.append({"pointer": "/query/type", "message": "at most 128 characters"})
    return status, task_type
