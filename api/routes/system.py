"""Health, readiness, metrics, stats, workers, task types, and the OpenAPI document."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from api.auth import METRICS, NONE, ScopedRoute
from api.problems import Problem
from api.state import State
from conveyor import tokens
from conveyor.errors import Unavailable


def _state(request: Request) -> State:
    state: State = request.app.state.conveyor
    return state


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = _state(request)
    try:
        await run_in_threadpool(state.ping)
    except Unavailable as exc:
        raise Problem(503, f"not ready: {exc}", "not-ready", headers={"Retry-After": "2"}) from exc
    return JSONResponse({"status": "ready", "task_types": len(state.engine.registry)})


async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(generate_latest, _state(request).metrics.registry)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)


async def stats(request: Request) -> Response:
    result = await run_in_threadpool(_state(request).engine.stats)
    return JSONResponse(result.to_json())


async def workers(request: Request) -> Response:
    found = await run_in_threadpool(_state(request).engine.live_workers)
    return JSONResponse({"items": [w.to_json() for w in found]})


async def task_types(request: Request) -> Response:
    registry = _state(request).engine.registry
    return JSONResponse({"items": [registry[name].to_json() for name in sorted(registry)]})


async def openapi(request: Request) -> Response:
    return JSONResponse(_state(request).openapi)


# Each route's scope is declared here, on the route (docs/SECURITY.md, "Scopes").
routes = [
    ScopedRoute("/healthz", healthz, methods=["GET"], scope=NONE),
    ScopedRoute("/readyz", readyz, methods=["GET"], scope=NONE),
    ScopedRoute("/metrics", metrics, methods=["GET"], scope=METRICS),
    ScopedRoute("/openapi.json", openapi, methods=["GET"], scope=NONE),
    ScopedRoute("/v1/stats", stats, methods=["GET"], scope=tokens.ADMIN),
    ScopedRoute("/v1/workers", workers, methods=["GET"], scope=tokens.ADMIN),
    ScopedRoute("/v1/task-types", task_types, methods=["GET"], scope=tokens.READ),
]
