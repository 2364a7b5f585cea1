"""Object-storage helpers shared by the built-in handlers that read or write S3."""

from __future__ import annotations

from typing import Any

from conveyor.errors import PermanentError
from conveyor.ports import BlobStore
from worker.handlers.context import Context


def bucket(ctx: Context, name: Any, field: str = "bucket") -> tuple[str, BlobStore]:
    """The bucket a payload names (or CONVEYOR_BUCKET) and its store.

    A TaskType may list ``options.buckets``: then a payload may name only those, so a
    client of the API cannot reach every bucket the worker's IAM role can.
    """
    chosen = str(name) if name else ctx.settings.bucket
    allowed = ctx.options.get("buckets")
    if name and isinstance(allowed, list) and chosen not in allowed and chosen != ctx.settings.bucket:
        raise PermanentError(f"{field}: bucket {chosen!r} is not in this TaskType's options.buckets")
    return chosen, ctx.blobs(chosen)
