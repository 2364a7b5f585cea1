"""Reading a JSON request body: size cap while streaming, media type, syntax, and the
values Conveyor cannot store (conveyor.jsonsafe)."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api.problems import Problem
from conveyor import jsonsafe
from conveyor.payloadschema import FORMAT_CHECKER


async def read_json(request: Request, max_bytes: int) -> Any:
    # Parsing and checking a large body is CPU work: off the event loop, so that other
    # requests (probes among them) are answered meanwhile.
    return await run_in_threadpool(parse, await read_body(request, max_bytes))


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw JSON body, its media type checked and its size capped while it streams in;
    ``parse`` reads it (a route that has more to do off the event loop does both in one
    thread hop)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise Problem(
            415,
            f"send the body as application/json (got {media or 'no content type'})",
            "unsupported-media-type",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Problem(413, f"request body is larger than {max_bytes} bytes", "too-large")
        chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> Any:
    try:
        return jsonsafe.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Problem(400, f"request body is not valid JSON: {exc}", "malformed-json") from exc
    except jsonsafe.UnsafeJSON as exc:
        raise Problem(
            422,
            f"request body is invalid at {exc.pointer}: {exc.message}",
            "validation",
            errors=[{"pointer": exc.pointer, "message": exc.message}],
        ) from exc


def check(validator: Draft202012Validator, data: Any, what: str = "request body") -> None:
    """Raise a 422 naming every offending field by JSON pointer."""
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    details = []
    for e in errors:
        pointer = "".join(f"/{p}" for p in e.absolute_path)
        if e.validator == "required":
            missing = e.message.split("'")[1] if "'" in e.message else ""
            pointer = f"{pointer}/{missing}"
        elif e.validator == "additionalProperties":
            extra = e.message.split("'")[1] if "'" in e.message else ""
            pointer = f"{pointer}/{extra}"
        details.append({"pointer": pointer or "/", "message": e.message})
    fields = ", ".join(d["pointer"] for d in details)
    raise Problem(422, f"{what} is invalid at {fields}", "validation", errors=details)


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
