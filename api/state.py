"""What every route needs: the engine, settings, metrics and precomputed validators."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from starlette.requests import Request

from api import schemas
from api.body import validator
from conveyor.engine import Engine
from conveyor.feed import ChangeFeed
from conveyor.metrics import ApiMetrics
from conveyor.redact import redact, redact_keys
from conveyor.settings import Settings
from conveyor.watch import TaskWatcher

log = logging.getLogger("conveyor.api")


@dataclass
class State:
    engine: Engine
    metrics: ApiMetrics
    settings: Settings = field(init=False)
    batch_validator: Draft202012Validator = field(init=False)
    openapi: dict[str, Any] = field(init=False)
    redact_keys: tuple[str, ...] = field(init=False)
    # One per process: every ?wait and event stream of this process shares its reads.
    watcher: TaskWatcher = field(init=False)
    # One per process: every GET /v1/events of this process shares its polls.
    feed: ChangeFeed = field(init=False)
    # The submitted counter's child per task type, looked up once (``labels()`` checks
    # and joins its arguments on every call).
    _submitted: dict[str, Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.settings = self.engine.settings
        self.redact_keys = redact_keys(self.settings.log_redact_keys)
        self.batch_validator = validator(schemas.batch_schema(self.settings.max_batch_size))
        self.openapi = schemas.openapi(self.settings.max_batch_size)
        self.watcher = TaskWatcher(self.engine.store)
        self.feed = ChangeFeed(self.engine.store)

    def count_submitted(self, task_type: str) -> None:
        child = self._submitted.get(task_type)
        if child is None:
            child = self._submitted[task_type] = self.metrics.submitted.labels(type=task_type)
        child.inc()

    def ping(self) -> None:
        self.engine.store.ping()
        self.engine.broker.ping()

    def log_payload(self, request: Request, task_type: str, payload: Any) -> None:
        """Payloads are logged only at DEBUG, with sensitive keys' values redacted."""
        if log.isEnabledFor(logging.DEBUG):
            text = json.dumps(redact(payload, self.redact_keys), separators=(",", ":"))[:2000]
            log.debug("submit by %s: type=%s payload=%s", self.principal(request), task_type, text)

    @staticmethod
    def principal(request: Request) -> str:
        """Who is calling: the token's name once auth is on, else 'anonymous'."""
        return str(request.scope.get("conveyor.principal", "anonymous"))
