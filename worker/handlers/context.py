"""What a handler gets besides its payload."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conveyor.errors import TaskCancelled
from conveyor.ports import BlobStore, TaskStore
from conveyor.settings import Settings


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
