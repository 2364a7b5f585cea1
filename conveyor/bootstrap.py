"""Wiring: settings in, an Engine over the AWS adapters out."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from conveyor.aws import AwsBackend
from conveyor.engine import Engine
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


def build(settings: Settings | None = None, max_pool: int = 50) -> Runtime:
    settings = settings or Settings.from_env()
    backend = AwsBackend(settings, max_pool=max_pool)
    engine = Engine(
        settings,
        backend.store(),
        backend.broker(),
        backend.dead_letters(),
        RegistryWatcher(settings.tasktypes),
        workers=backend.workers(),
    )
    return Runtime(settings, backend, engine)


class JsonishFormatter(logging.Formatter):
    """One line per record, key=value, with the task id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        task_id = getattr(record, "task_id", None)
        return f"{line} task_id={task_id}" if task_id else line


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonishFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # botocore logs every retry at INFO/DEBUG; keep it quiet unless asked.
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
