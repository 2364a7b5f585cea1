"""Configuration from the environment: one frozen object, read once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from conveyor import lanes
from conveyor.model import Priority

# More status-index partitions than this costs every list a Query per partition for no
# write rate a task queue needs (64: about 32,000 tasks/s on one table).
MAX_STATUS_SHARDS = 64


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    # A typo must not silently turn a security switch off (or on).
    raise ValueError(f"CONVEYOR_{name.upper()} must be true or false, not {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Every knob Conveyor reads. Field ``foo_bar`` comes from ``CONVEYOR_FOO_BAR``.

    AWS itself is reached through the standard boto3 chain (``AWS_REGION``,
    ``AWS_ENDPOINT_URL``, credentials, IRSA), so real AWS, LocalStack, ElasticMQ and the
    embedded moto server differ only in environment.
    """

    queue: str = "conveyor-tasks"  # the normal-priority queue
    # The high and low queues, name or URL; unset: <queue>-high and <queue>-low.
    queue_url_high: str = ""
    queue_url_low: str = ""
    # How workers share receives between the levels that have work (conveyor/lanes.py).
    priority_weights: str = lanes.DEFAULT_WEIGHTS
    dlq: str = "conveyor-tasks-dlq"
    table: str = "conveyor-tasks"
    # Partitions per status in the table's status-index (conveyor/aws/shards.py): 1 takes
    # about 500 tasks/s per table; each shard adds as much. Every process must agree; raise only.
    status_shards: int = 1
    bucket: str = "conveyor-data"
    region: str = "us-east-1"
    tasktypes: str = "/etc/conveyor/tasktypes"
    max_payload_bytes: int = 256 * 1024
    max_batch_size: int = 100
    retention_seconds: int = 7 * 24 * 3600
    visibility_timeout: int = 30
    max_receive_count: int = 50
    redispatch_after_seconds: int = 300
    # The API runs the sweeper and the DLQ reaper (conveyor/maintenance.py) every interval
    # (0 = a quarter of redispatch_after_seconds, at least 5 s).
    maintenance_enabled: bool = True
    maintenance_interval_seconds: float = 0.0
    # The API fires schedules (conveyor/scheduler.py), looking every interval seconds.
    scheduler_enabled: bool = True
    scheduler_interval_seconds: float = 5.0
    hold_seconds: int = 30  # a paused or disabled type's message waits this long between checks
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    worker_concurrency: int = 8
    worker_metrics_port: int = 9100
    # All interfaces: in a pod, Prometheus scrapes the pod IP. `conveyor run` sets loopback.
    worker_metrics_host: str = "0.0.0.0"
    poll_wait_seconds: int = 20
    shutdown_grace_seconds: float = 25.0
    worker_max_tasks: int = 0  # >0: one-shot worker (KEDA ScaledJob): this many, or an empty poll, then exit
    heartbeat_seconds: float = 0.0  # 0 = a third of the visibility timeout
    worker_dead_after_seconds: float = 0.0  # 0 = three heartbeats
    stats_cache_seconds: float = 5.0
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one object per line (conveyor/logs.py); the chart sets json
    # Completion webhooks (docs/WEBHOOKS.md): the signing secrets, one file per token or
    # TaskType (token.<name>, type.<name>); the chart mounts webhooks.existingSecret here.
    webhook_secrets_dir: str = "/etc/conveyor/webhooks"
    webhook_timeout_seconds: float = 10.0
    # Auth and limits (docs/SECURITY.md). Auth is on unless turned off explicitly.
    auth_enabled: bool = True
    auth_tokens_file: str = "/etc/conveyor/auth/tokens.json"
    metrics_require_token: bool = False  # /metrics stays open for the ServiceMonitor by default
    rate_limit: str = "100/second;3000/minute"  # per token, `limits` notation; "off" disables
    auth_failure_limit: str = "20/minute"  # failed authentications per client address, then 429
    # Payload keys whose values debug logs replace (case-insensitive substring match).
    log_redact_keys: str = "password,secret,token,authorization,api_key,apikey,private_key,credential,cookie"

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get("CONVEYOR_" + f.name.upper())
            if raw is None or raw == "":
                continue
            default = f.default
            if isinstance(default, bool):  # before int: bool is an int
                values[f.name] = _bool(f.name, raw)
            elif isinstance(default, int | float):
                values[f.name] = type(default)(raw)
            else:
                values[f.name] = raw
        if "region" not in values:
            values["region"] = _env("AWS_REGION", _env("AWS_DEFAULT_REGION", cls.region))
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        lanes.parse_weights(self.priority_weights)  # a bad value fails at start, naming the variable
        if not 1 <= self.status_shards <= MAX_STATUS_SHARDS:
            raise ValueError(
                f"CONVEYOR_STATUS_SHARDS must be 1 to {MAX_STATUS_SHARDS}, not {self.status_shards}"
            )
        queues = [self.queue_of(p) for p in (Priority.HIGH, Priority.NORMAL, Priority.LOW)]
        if len(set(queues)) < len(queues):
            raise ValueError(
                "CONVEYOR_QUEUE_URL_HIGH, CONVEYOR_QUEUE and CONVEYOR_QUEUE_URL_LOW must name three "
                f"different queues, one per priority level (got {', '.join(queues)})"
            )

    def queue_of(self, priority: Priority) -> str:
        """The queue (name or URL) that holds tasks of ``priority``."""
        given = {Priority.HIGH: self.queue_url_high, Priority.LOW: self.queue_url_low}.get(priority)
        return given or lanes.derived_queue(self.queue, priority)

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_seconds or max(self.visibility_timeout / 3.0, 0.5)

    @property
    def worker_dead_after(self) -> float:
        return self.worker_dead_after_seconds or self.heartbeat_interval * 3 + 2
