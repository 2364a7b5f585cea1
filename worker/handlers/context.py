"""What a handler gets besides its payload."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import TaskCancelled
from conveyor.model import Progress, TaskEvent, now
from conveyor.ports import BlobStore, TaskStore
from conveyor.settings import Settings
from worker.progress import Reporter


@dataclass
class Context:
    task_id: str
    task_type: str
    attempt: int
    max_attempts: int
    settings: Settings
    logger: logging.LoggerAdapter[logging.Logger]
    options: dict[str, Any] = field(default_factory=dict)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    blob_factory: Callable[[str | None], BlobStore] | None = None
    store: TaskStore | None = None
    reporter: Reporter | None = None

    @property
    def cancelled(self) -> bool:
        """True once someone asked to cancel this task; long handlers should check it."""
        return self.cancel_event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise TaskCancelled("cancelled on request")

    def blobs(self, bucket: str | None = None) -> BlobStore:
        """Object storage (S3), the configured bucket unless one is named."""
        if self.blob_factory is None:
            raise RuntimeError("this worker has no object storage configured")
        return self.blob_factory(bucket)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Say how far this attempt got: ``fraction`` from 0 to 1, and an optional short
        message (at most 256 characters, longer is cut). Cheap to call in a loop: the
        record is written at most once a second, and the last value when the handler
        returns. Shown in GET /v1/tasks/{id} and its event stream, to every reader of the
        task, metadata-only tokens included: put nothing secret in the message."""
        if self.reporter is None:
            Progress.checked(fraction, message, self.attempt, now())  # still checked
            return
        self.reporter.progress(fraction, message)

    def event(self, name: str, data: Any = None) -> None:
        """Record a named event with JSON ``data`` (at most 1 KB): the record keeps the
        last 20, each numbered, and the event stream sends each once. ``data`` is
        withheld from tokens that may not read payloads and results."""
        if self.reporter is None:
            TaskEvent.checked(1, name, data, self.attempt, now())
            return
        self.reporter.event(name, data)
