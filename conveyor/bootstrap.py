"""Wiring: settings in, an Engine over the AWS adapters out."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from conveyor import logs
from conveyor.aws import AwsBackend
from conveyor.engine import Engine
from conveyor.metrics import AwsMetrics
from conveyor.model import Priority
from conveyor.ports import BlobStore
from conveyor.registry import RegistryWatcher
from conveyor.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    backend: AwsBackend
    engine: Engine

    def blobs(self, bucket: str | None = None) -> BlobStore:
        return self.backend.blobs(bucket)


def build(
    settings: Settings | None = None, max_pool: int = 50, metrics: CollectorRegistry | None = None
) -> Runtime:
    """The backend and the engine over it. With ``metrics`` (a process's registry), every
    throttled AWS answer is counted there (``conveyor_aws_throttled_total``)."""
    settings = settings or Settings.from_env()
    backend = AwsBackend(settings, max_pool=max_pool)
    if metrics is not None:
        backend.count_throttles(AwsMetrics(metrics).count_throttle)
    lanes = backend.lanes()
    engine = Engine(
        settings,
        backend.store(),
        lanes[Priority.NORMAL],
        backend.dead_letters(),
        RegistryWatcher(settings.tasktypes),
        workers=backend.workers(),
        limits=backend.limits(),
        lanes=lanes,
    )
    return Runtime(settings, backend, engine)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Logging for a process: ``CONVEYOR_LOG_LEVEL`` and ``CONVEYOR_LOG_FORMAT`` (conveyor/logs.py)."""
    logs.configure(level, fmt)
