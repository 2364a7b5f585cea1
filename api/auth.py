"""Bearer-token authentication, scopes and per-token rate limits, as one ASGI middleware.

Every route's scope is decided here, before routing, from the method and path alone: a
caller without the scope gets the same 401/403 whether or not a task id exists, so ids
cannot be probed. Tokens come from the hashed tokens file (``conveyor.tokens``), re-read
when it changes.

| route | scope |
|---|---|
| ``POST /v1/tasks``, ``POST /v1/tasks/batch`` | ``tasks:submit`` |
| ``POST /v1/tasks/{id}/cancel``, ``/retry``, ``GET /v1/stats``, ``GET /v1/workers`` | ``tasks:admin`` |
| every other ``/v1/...`` (task reads, lists, task types) | ``tasks:read`` |
| ``/metrics`` | none, or ``tasks:admin`` with ``CONVEYOR_METRICS_REQUIRE_TOKEN`` |
| ``/healthz``, ``/readyz``, ``/openapi.json``, the console's files | none |
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import Problem, problem_response
from api.ratelimit import RateLimiter
from conveyor import tokens
from conveyor.settings import Settings

log = logging.getLogger("conveyor.api.auth")

PRINCIPAL = "conveyor.principal"
SCOPES = "conveyor.scopes"
ANONYMOUS = "anonymous"

_ACTION = re.compile(r"^/v1/tasks/[^/]+/(cancel|retry)$")
_BEARER = re.compile(r"^Bearer +([\x21-\x7e]+) *$", re.IGNORECASE)


def required_scope(method: str, path: str, metrics_require_token: bool = False) -> str | None:
    """The scope a request needs; None for the open routes."""
    if path == "/metrics":
        return tokens.ADMIN if metrics_require_token else None
    if not (path == "/v1" or path.startswith("/v1/")):
        return None  # probes, /openapi.json and the console's static files
    if method == "POST" and path in ("/v1/tasks", "/v1/tasks/batch"):
        return tokens.SUBMIT
    if (method == "POST" and _ACTION.match(path)) or path in ("/v1/stats", "/v1/workers"):
        return tokens.ADMIN
    return tokens.READ


@dataclass
class Authenticator:
    """What the middleware consults: the tokens (None when auth is off) and the limiter."""

    watcher: tokens.TokensWatcher | None
    limiter: RateLimiter
    metrics_require_token: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        watcher = tokens.TokensWatcher(settings.auth_tokens_file) if settings.auth_enabled else None
        if watcher is None:
            log.warning("API authentication is OFF (CONVEYOR_AUTH_ENABLED=false): anyone can call it")
        return cls(watcher, RateLimiter(settings.rate_limit), settings.metrics_require_token)


class AuthMiddleware:
    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = required_scope(scope["method"], scope["path"], self.auth.metrics_require_token)
        if needed is None:
            await self.app(scope, receive, send)
            return
        problem, key = self._authorize(scope, needed)
        if problem is None:
            retry_after = self.auth.limiter.hit(key) if self.auth.limiter.enabled else None
            if retry_after is not None:
                problem = Problem(
                    429,
                    f"too many requests from this caller; retry in {retry_after} s",
                    "rate-limited",
                    headers={"Retry-After": str(retry_after)},
                )
        if problem is not None:
            await problem_response(Request(scope), problem)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorize(self, scope: Scope, needed: str) -> tuple[Problem | None, str]:
        """Set the principal on the scope; returns (refusal or None, rate-limit key)."""
        if self.auth.watcher is None:
            scope[PRINCIPAL] = ANONYMOUS
            scope[SCOPES] = frozenset(tokens.SCOPES)
            client = scope.get("client")
            return None, f"ip:{client[0] if client else 'unknown'}"
        header = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if not header:
            return self._unauthorized("send a bearer token: Authorization: Bearer <token>", None), ""
        match = _BEARER.match(header)
        entry = self.auth.watcher.current().find(match.group(1)) if match else None
        if entry is None:
            # Same answer for a malformed header and an unknown token: nothing to learn.
            return self._unauthorized("the bearer token is not valid", "invalid_token"), ""
        scope[PRINCIPAL] = entry.name
        scope[SCOPES] = entry.scopes
        if needed not in entry.scopes:
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
