"""/v1/schedules: list, get (with the next runs), trigger one now."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import ScopedRoute
from api.problems import Problem
from api.routes.tasks import _scopes, _task_response, idempotency_key
from api.state import State
from conveyor import tokens
from conveyor.schedule import ScheduleSpec
from conveyor.scheduler import NEXT_RUNS, Scheduler


def _scheduler(request: Request) -> Scheduler:
    firing: Scheduler = request.app.state.scheduler
    return firing


def _find(request: Request) -> ScheduleSpec:
    name = request.path_params["name"]
    spec = _scheduler(request).find(name) if len(name) <= 253 else None
    if spec is None:
        raise Problem(
            404,
            "no schedule with this name",
            "not-found",
            errors=[{"pointer": "/path/name", "message": "not the name of a TaskSchedule"}],
        )
    return spec


async def list_schedules(request: Request) -> Response:
    firing = _scheduler(request)

    def views() -> list[dict[str, object]]:
        return [firing.view(spec) for spec in firing.specs()]

    return JSONResponse({"items": await run_in_threadpool(views)})


async def get_schedule(request: Request) -> Response:
    spec = _find(request)
    return JSONResponse(await run_in_threadpool(_scheduler(request).view, spec, NEXT_RUNS))


async def trigger(request: Request) -> Response:
    spec = _find(request)
    if not spec.ready:
        raise Problem(
            409,
            f"schedule {spec.name!r} is not ready: {spec.reason or 'see its Ready condition'}",
            "not-ready",
            errors=[{"pointer": "/path/name", "message": spec.reason or "not ready"}],
        )
    state: State = request.app.state.conveyor
    key = idempotency_key(request, state, f"trigger:{spec.key}:")
    task, created = await run_in_threadpool(_scheduler(request).trigger, spec, key, _scopes(request))
    if created:
        state.count_submitted(task.type)
    # The payload is the schedule's, written by whoever manages schedules: shown only to
    # a caller who may read payloads.
    return _task_response(request, task, 202 if created else 200)


# Each route's scope is declared here, on the route (docs/SECURITY.md, "Scopes").
routes = [
    ScopedRoute("/v1/schedules", list_schedules, methods=["GET"], name="schedules", scope=tokens.READ),
    ScopedRoute("/v1/schedules/{name}", get_schedule, methods=["GET"], name="schedule", scope=tokens.READ),
    ScopedRoute(
        "/v1/schedules/{name}/trigger", trigger, methods=["POST"], name="trigger", scope=tokens.SUBMIT
    ),
]
