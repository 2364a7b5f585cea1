"""Bearer-token authentication, scopes and rate limits, as one ASGI middleware.

Every route declares the scope it needs on itself (``ScopedRoute`` / ``ScopedMount``,
``NONE`` for the open ones). The middleware finds the route the router will hand the
request to, exactly as the router does, and enforces that route's scope before it runs:
the scope is never guessed from the path as a string. A route that declares no scope is
refused, and a declared route refuses a request the middleware did not authorize for it,
so a route added without a scope, or a router that disagrees, fails closed.

A caller without the scope gets the same 401/403 whether or not a task id exists, so ids
cannot be probed. Tokens come from the hashed tokens file (``conveyor.tokens``), re-read
when it changes. Requests whose path holds a control character are refused outright.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import Problem, problem_response
from api.ratelimit import RateLimiter
from conveyor import tokens
from conveyor.settings import Settings

log = logging.getLogger("conveyor.api.auth")

PRINCIPAL = "conveyor.principal"
SCOPES = "conveyor.scopes"
AUTHORIZED = "conveyor.authorized_route"
# (route or None, full match?) as found before routing: the request metrics' route label.
MATCHED = "conveyor.matched_route"
ANONYMOUS = "anonymous"
# The console's session cookie (POST /v1/session): accepted only by routes declared with
# ``cookie=True`` (the GET event streams), since an EventSource cannot send a header.
SESSION_COOKIE = "conveyor_session"

# Declared scopes besides the token scopes: open to anyone, and /metrics, which is open
# unless CONVEYOR_METRICS_REQUIRE_TOKEN asks for an admin token.
NONE = "none"
METRICS = "metrics"
DECLARABLE = (NONE, METRICS, *tokens.SCOPES)

_BEARER = re.compile(r"^Bearer +([\x21-\x7e]+) *$", re.IGNORECASE)
# C0 controls, DEL and C1 controls: a route regex's `$` matches before a final "\n", and
# no route, id or console file has any of them in its name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def grants(held: frozenset[str], needed: str) -> bool:
    """Whether scopes ``held`` admit a route needing ``needed``: the route's own scope, or
    for read routes the metadata-only read scope (whose answers omit payloads and results)."""
    return needed in held or (needed == tokens.READ and tokens.READ_METADATA in held)


def sees_payloads(request: Request) -> bool:
    """Whether this caller may see task payloads and results: tokens with ``tasks:read``."""
    held = request.scope.get(SCOPES)
    return held is not None and tokens.READ in held


class ScopedRoute(Route):
    """A route and the scope it needs (``NONE`` for an open one; there is no default)."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        scope: str,
        methods: list[str] | None = None,
        name: str | None = None,
        cookie: bool = False,
    ) -> None:
        super().__init__(path, endpoint, methods=methods, name=name)
        self.required_scope = _declarable(scope, f"route {path}")
        if cookie and (methods != ["GET"] or scope not in (tokens.READ, NONE)):
            # A cookie rides along with cross-site requests' intent: only reads may take it.
            raise ValueError(f"route {path}: only GET read routes may accept the session cookie")
        self.accepts_cookie = cookie

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await _authorized_for(self, scope, receive, send):
            await super().handle(scope, receive, send)


class ScopedMount(Mount):
    """A mounted app (the console's files) and the scope it needs."""

    def __init__(self, path: str, app: ASGIApp, *, scope: str, name: str | None = None) -> None:
        super().__init__(path, app=app, name=name)
        self.required_scope = _declarable(scope, f"mount {path}")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await _authorized_for(self, scope, receive, send):
            await super().handle(scope, receive, send)


def _declarable(scope: str, what: str) -> str:
    if scope not in DECLARABLE:
        raise ValueError(f"{what}: scope must be one of {', '.join(DECLARABLE)}, not {scope!r}")
    return scope


async def _authorized_for(route: BaseRoute, scope: Scope, receive: Receive, send: Send) -> bool:
    """A scoped route runs only for a request the middleware authorized for this very route."""
    if scope.get(AUTHORIZED) is route:
        return True
    log.error("%s %r reached a route it was not authorized for; refused", scope.get("method"), scope["path"])
    await problem_response(Request(scope), Problem(403, "this request was not authorized", "forbidden"))(
        scope, receive, send
    )
    return False


def declared_scope(route: BaseRoute) -> str | None:
    """What a route declares, or None when it declares nothing (and is then refused)."""
    value = getattr(route, "required_scope", None)
    return value if isinstance(value, str) and value in DECLARABLE else None


def match_route(routes: Sequence[BaseRoute], scope: Scope) -> tuple[BaseRoute | None, bool]:
    """The route Starlette's router hands this request to, and whether it matched fully:
    the first full match, else the first partial one (which answers 405). None: no route;
    the router answers 404 or redirects to the path with(out) a trailing slash, and nothing
    runs."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route, True
        if match is Match.PARTIAL and partial is None:
            partial = route
    return partial, False


def route_for(routes: Sequence[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The route the router hands this request to (``match_route``)."""
    return match_route(routes, scope)[0]


def client_key(scope: Scope) -> str:
    """The caller's address as uvicorn resolved it: X-Forwarded-For counts only when the
    connecting peer is a trusted proxy (FORWARDED_ALLOW_IPS). An IPv6 caller is counted by
    its /64, which one host or network typically holds whole."""
    client = scope.get("client")
    return _address_key(str(client[0]) if client else "unknown")


@functools.lru_cache(maxsize=4096)
def _address_key(host: str) -> str:
    # Parsing an address costs more than the rest of the key: callers repeat, so cache.
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"ip:{host}"
    if address.version == 6:
        return f"ip:{ipaddress.ip_network(f'{address}/64', strict=False)}"
    return f"ip:{address}"


@dataclass
class Authenticator:
    """What the middleware consults: the tokens (None when auth is off) and the limiters."""

    watcher: tokens.TokensWatcher | None
    limiter: RateLimiter
    metrics_require_token: bool = False
    failures: RateLimiter | None = None  # failed authentications per client address

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        watcher = tokens.TokensWatcher(settings.auth_tokens_file) if settings.auth_enabled else None
        if watcher is None:
            log.warning("API authentication is OFF (CONVEYOR_AUTH_ENABLED=false): anyone can call it")
        failures = RateLimiter(settings.auth_failure_limit, "CONVEYOR_AUTH_FAILURE_LIMIT")
        return cls(watcher, RateLimiter(settings.rate_limit), settings.metrics_require_token, failures)

    def needed(self, declared: str) -> str | None:
        """The token scope a declared scope asks for; None for an open route."""
        if declared == METRICS:
            return tokens.ADMIN if self.metrics_require_token else None
        return None if declared == NONE else declared


class AuthMiddleware:
    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._check(scope)
        if problem is not None:
            await problem_response(Request(scope), problem)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> Problem | None:
        """Authorize the request for the route that will answer it; a refusal, or None."""
        if _CONTROL.search(scope["path"]):
            return Problem(
                400,
                "the request path contains a control character",
                "malformed-path",
                errors=[{"pointer": "/path", "message": "no control characters (%00-%1F, %7F-%9F)"}],
            )
        route, full = match_route(scope["app"].routes, scope)
        scope[MATCHED] = (route, full)
        if route is None:
            return None  # the router answers 404 (or redirects); nothing runs
        declared = declared_scope(route)
        if declared is None:
            log.error("route %s declares no scope; refused", getattr(route, "path", route))
            return Problem(403, "this route declares no scope and is refused", "forbidden")
        scope[AUTHORIZED] = route
        needed = self.auth.needed(declared)
        if needed is None:
            return None
        problem, key = self._authorize(scope, needed, getattr(route, "accepts_cookie", False))
        if problem is None and self.auth.limiter.enabled:
            retry_after = self.auth.limiter.hit(key)
            if retry_after is not None:
                problem = _too_many(
                    f"too many requests from this caller; retry in {retry_after} s", retry_after
                )
        if problem is not None:
            del scope[AUTHORIZED]
        return problem

    def _authorize(self, scope: Scope, needed: str, cookie: bool = False) -> tuple[Problem | None, str]:
        """Set the principal on the scope; returns (refusal or None, rate-limit key)."""
        if self.auth.watcher is None:
            scope[PRINCIPAL] = ANONYMOUS
            scope[SCOPES] = frozenset(tokens.SCOPES)
            return None, client_key(scope)
        header = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if not header and cookie:
            token = _session_token(scope)
            header = f"Bearer {token}" if token else ""
        if not header:
            return self._unauthorized("send a bearer token: Authorization: Bearer <token>", None), ""
        # A caller that keeps presenting bad credentials is held off *before* its next one is
        # checked, so guessing is slowed whatever the guesses are.
        failures = self.auth.failures
        address = client_key(scope)
        if failures is not None and failures.enabled:
            retry_after = failures.check(address)
            if retry_after is not None:
                detail = f"too many failed authentications from this address; retry in {retry_after} s"
                return _too_many(detail, retry_after), ""
        match = _BEARER.match(header)
        entry = self.auth.watcher.current().find(match.group(1)) if match else None
        if entry is None:
            if failures is not None and failures.enabled:
                failures.count(address)
            # Same answer for a malformed header and an unknown token: nothing to learn.
            return self._unauthorized("the bearer token is not valid", "invalid_token"), ""
        scope[PRINCIPAL] = entry.name
        scope[SCOPES] = entry.scopes
        if not grants(entry.scopes, needed):
            log.info("token %r refused: %s needs scope %s", entry.name, scope["method"], needed)
            return (
                Problem(
                    403,
                    f"this token lacks the {needed} scope",
                    "insufficient-scope",
                    headers={
                        "WWW-Authenticate": f'Bearer realm="conveyor", error="insufficient_scope", '
                        f'scope="{needed}"'
                    },
                    required_scope=needed,
                ),
                "",
            )
        return None, f"token:{entry.name}"

    @staticmethod
    def _unauthorized(detail: str, error: str | None) -> Problem:
        challenge = 'Bearer realm="conveyor"' + (f', error="{error}"' if error else "")
        return Problem(401, detail, "unauthorized", headers={"WWW-Authenticate": challenge})


def _session_token(scope: Scope) -> str:
    return Request(scope).cookies.get(SESSION_COOKIE, "")


def _too_many(detail: str, retry_after: int) -> Problem:
    return Problem(429, detail, "rate-limited", headers={"Retry-After": str(retry_after)})
