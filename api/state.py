"""What every route needs: the engine, settings, metrics and precomputed validators."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from starlette.requests import Request

from api import schemas
from api.body import validator
from conveyor.engine import Engine
from conveyor.metrics import ApiMetrics
from conveyor.settings import Settings


@dataclass
class State:
    engine: Engine
    metrics: ApiMetrics
    settings: Settings = field(init=False)
    batch_validator: Draft202012Validator = field(init=False)
    openapi: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.settings = self.engine.settings
        self.batch_validator = validator(schemas.batch_schema(self.settings.max_batch_size))
        self.openapi = schemas.openapi(self.settings.max_batch_size)

    def ping(self) -> None:
        self.engine.store.ping()
        self.engine.broker.ping()

    @staticmethod
    def principal(request: Request) -> str:
        """Who is calling: the token's name once auth is on, else 'anonymous'."""
        return str(request.scope.get("conveyor.principal", "anonymous"))
