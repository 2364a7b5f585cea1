"""Configuration from the environment: one frozen object, read once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


@dataclass(frozen=True)
class Settings:
    """Every knob Conveyor reads. Field ``foo_bar`` comes from ``CONVEYOR_FOO_BAR``.

    AWS itself is reached through the standard boto3 chain (``AWS_REGION``,
    ``AWS_ENDPOINT_URL``, credentials, IRSA), so real AWS, LocalStack, ElasticMQ and the
    embedded moto server differ only in environment.
    """

    queue: str = "conveyor-tasks"
    dlq: str = "conveyor-tasks-dlq"
    table: str = "conveyor-tasks"
    bucket: str = "conveyor-data"
    region: str = "us-east-1"
    tasktypes: str = "/etc/conveyor/tasktypes"
    max_payload_bytes: int = 256 * 1024
    max_batch_size: int = 100
    retention_seconds: int = 7 * 24 * 3600
    visibility_timeout: int = 30
    max_receive_count: int = 50
    redispatch_after_seconds: int = 300
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    worker_concurrency: int = 8
    worker_metrics_port: int = 9100
    poll_wait_seconds: int = 20
    shutdown_grace_seconds: float = 25.0
    heartbeat_seconds: float = 0.0  # 0 = a third of the visibility timeout
    worker_dead_after_seconds: float = 0.0  # 0 = three heartbeats
    stats_cache_seconds: float = 5.0
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get("CONVEYOR_" + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = type(f.default)
            values[f.name] = kind(raw) if kind in (int, float) else raw
        if "region" not in values:
            values["region"] = _env("AWS_REGION", _env("AWS_DEFAULT_REGION", cls.region))
        values.update(overrides)
        return cls(**values)

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_seconds or max(self.visibility_timeout / 3.0, 0.5)

    @property
    def worker_dead_after(self) -> float:
        return self.worker_dead_after_seconds or self.heartbeat_interval * 3 + 2
