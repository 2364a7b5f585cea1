"""The Starlette application: routes, error handlers, request metrics, the console."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Match
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import MATCHED, NONE, Authenticator, AuthMiddleware, ScopedMount
from api.problems import Problem, on_conveyor_error, on_http_exception, on_problem, on_unexpected
from api.routes import events, schedules, system, tasks
from api.state import State
from conveyor import kube, maintenance, scheduler, tracing
from conveyor.engine import Engine
from conveyor.errors import ConveyorError
from conveyor.metrics import ApiMetrics, QueueCollector, SchedulerMetrics
from conveyor.schedule_source import ScheduleWatcher

STATIC = Path(__file__).parent / "static"

# The console's own policy (its <meta> tag says the same), plus what only a header can say:
# no page may frame the console or the API (clickjacking).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
]
_SECURITY_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response, replacing any same-named ones."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _SECURITY_NAMES]
                message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_wrapper)


class ConveyorApp(Starlette):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside Starlette's ServerErrorMiddleware, so even its 500 answers carry the headers.
        return SecurityHeaders(super().build_middleware_stack())


class RequestMetrics:
    """Counts and times every request by route *template* (never the raw path: ids in
    labels would explode the series count)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        # Each label set's child, looked up once: ``labels()`` checks and joins its
        # arguments on every call. As many entries as the metrics have series.
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def _template(self, scope: Scope) -> str:
        matched = scope.get(MATCHED)
        if matched is not None:  # the auth middleware found the route already
            route, full = matched
            return str(getattr(route, "path", "other") or "/") if full else "unmatched"
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", "other") or "/")
        return "unmatched"

    def _record(self, scope: Scope, code: int, seconds: float) -> None:
        route = self._template(scope)
        method = scope["method"]
        counter = self._counters.get((route, method, str(code)))
        if counter is None:
            counter = self.metrics.requests.labels(route=route, method=method, code=str(code))
            self._counters[(route, method, str(code))] = counter
        timer = self._timers.get((route, method))
        if timer is None:
            timer = self._timers[(route, method)] = self.metrics.latency.labels(route=route, method=method)
        counter.inc()
        timer.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._record(scope, code, time.perf_counter() - start)


def _queue_gauges(engine: Engine) -> dict[str, float]:
    stats = engine.stats()
    values: dict[str, float] = {
        "workers": stats.workers,
        "oldest_queued_age_seconds": stats.oldest_queued_age_seconds,
    }
    for name, depth in (("main", stats.queue), ("dlq", stats.dlq)):
        values |= {
            f"{name}_visible": depth.visible,
            f"{name}_in_flight": depth.in_flight,
            f"{name}_delayed": depth.delayed,
        }
    for priority, depth in (stats.queues or {}).items():
        values |= {
            f"priority_{priority.value}_visible": depth.visible,
            f"priority_{priority.value}_in_flight": depth.in_flight,
            f"priority_{priority.value}_delayed": depth.delayed,
        }
    values |= {f"tasks_{s.value}": n for s, n in stats.counts.items()}
    return values


def _lifespan(
    engine: Engine, firing: scheduler.Scheduler
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The sweeper, the DLQ reaper and the schedules' firing loop run here, not in the
    workers: the API is always up, workers may be scaled to zero (conveyor/maintenance.py,
    conveyor/scheduler.py)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with maintenance.background(engine), scheduler.background(firing):
                yield
        finally:
            # uvicorn ends the process by re-raising SIGTERM, which skips atexit: send the
            # spans still buffered now.
            tracing.flush()

    return lifespan


def _scheduler(engine: Engine, registry: CollectorRegistry) -> scheduler.Scheduler:
    """The firing loop over the schedules beside the TaskType registry; in a cluster it
    also writes each TaskSchedule's status (the sink is None elsewhere)."""
    writer = kube.KubeStatusWriter.from_environment()
    status_sink: scheduler.StatusSink | None = writer.patch_schedule_status if writer else None
    return scheduler.Scheduler(
        engine,
        ScheduleWatcher(engine.settings.tasktypes).current,
        metrics=SchedulerMetrics(registry),
        status_sink=status_sink,
    )


def create_app(
    engine: Engine,
    registry: CollectorRegistry | None = None,
    extra_middleware: list[Middleware] | None = None,
    auth: Authenticator | None = None,
) -> Starlette:
    registry = registry if registry is not None else REGISTRY
    auth = auth or Authenticator.from_settings(engine.settings)
    metrics = ApiMetrics(registry)
    registry.register(QueueCollector(lambda: _queue_gauges(engine), ttl=engine.settings.stats_cache_seconds))
    firing = _scheduler(engine, registry)
    routes: list[BaseRoute] = [*tasks.routes, *events.routes, *schedules.routes, *system.routes]
    if (STATIC / "index.html").exists():
        console = StaticFiles(directory=STATIC, html=True)
        routes.append(ScopedMount("/", console, name="console", scope=NONE))
    app = ConveyorApp(
        routes=routes,
        middleware=[
            Middleware(RequestMetrics, metrics=metrics, routes=routes),
            # Inside the metrics, so refusals (401/403/429) are counted too.
            Middleware(AuthMiddleware, auth=auth),
            *(extra_middleware or []),
        ],
        exception_handlers={
            Problem: on_problem,
            HTTPException: on_http_exception,
            ConveyorError: on_conveyor_error,
            Exception: on_unexpected,
        },
        lifespan=_lifespan(engine, firing),
    )
    if tracing.enabled():
        # Outermost of the middleware: a request's span covers auth and metrics too; its
        # context is current while the route runs, so the submit carries it to the worker.
        from opentelemetry.instrumentation.starlette import StarletteInstrumentor

        StarletteInstrumentor.instrument_app(app, tracer_provider=tracing.provider())
    app.state.conveyor = State(engine, metrics)
    app.state.auth = auth
    app.state.scheduler = firing
    return app
