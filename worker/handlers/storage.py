"""Object-storage rules shared by the built-in handlers that read or write S3.

What a payload may reach is decided by the TaskType, not by the worker's IAM role:

- ``options.buckets``: buckets a payload may name besides ``CONVEYOR_BUCKET`` (unset: only
  ``CONVEYOR_BUCKET``);
- ``options.readPrefixes`` / ``options.writePrefixes``: key prefixes the handler may read
  from / write to (unset: any key of an allowed bucket);
- ``options.overwrite: true``: an existing object may be replaced (default: refused, by a
  conditional write, so two writers cannot both win). An object this same task wrote on an
  earlier attempt (its ``conveyor-task-id`` metadata) is always replaceable, so a retry
  after a lost answer does not fail on its own output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from conveyor.errors import Conflict, PermanentError
from conveyor.ports import BlobInfo, BlobStore
from worker.handlers.context import Context
from worker.handlers.options import string_list

T = TypeVar("T")
TASK_METADATA = "conveyor-task-id"


def bucket(ctx: Context, name: Any, field: str = "bucket") -> tuple[str, BlobStore]:
    """The bucket a payload names (or CONVEYOR_BUCKET) and its store; refused unless it is
    CONVEYOR_BUCKET or listed in the TaskType's ``options.buckets``."""
    chosen = str(name) if name else ctx.settings.bucket
    allowed = [ctx.settings.bucket, *(string_list(ctx.options, "buckets", non_empty=False) or [])]
    if chosen not in allowed:
        raise PermanentError(
            f"{field}: bucket {chosen!r} is not allowed; this TaskType allows {sorted(set(allowed))} "
            "(CONVEYOR_BUCKET and options.buckets)"
        )
    return chosen, ctx.blobs(chosen)


def check_key(ctx: Context, key: str, field: str, access: str) -> str:
    """Refuse a key outside the TaskType's ``options.readPrefixes`` / ``writePrefixes``."""
    option = "readPrefixes" if access == "read" else "writePrefixes"
    if not key:
        raise PermanentError(f"{field}: must not be empty")
    prefixes = string_list(ctx.options, option, non_empty=False)  # "" prefixes every key
    if prefixes is not None and not any(key.startswith(p) for p in prefixes):
        raise PermanentError(f"{field}: {key!r} is outside this TaskType's options.{option} {prefixes}")
    return key


def positive_int_option(ctx: Context, name: str, default: int) -> int:
    """A TaskType's size cap (``options.<name>``): a positive integer, ``default`` if unset."""
    value = ctx.options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:  # bool is an int
        raise PermanentError(f"options.{name}: must be a positive integer")
    return value


def overwrite_allowed(ctx: Context) -> bool:
    return ctx.options.get("overwrite") is True  # a stray "false" string must not open it


def _ours(ctx: Context, info: BlobInfo | None) -> bool:
    return info is not None and info.metadata.get(TASK_METADATA) == ctx.task_id


def write_new(
    ctx: Context,
    store: BlobStore,
    where: str,
    key: str,
    field: str,
    write: Callable[[bool, dict[str, str]], T],
) -> T:
    """Run ``write(overwrite, metadata)`` under the overwrite rule. The HEAD first spares
    producing a file that cannot be stored; the conditional write closes the race."""
    metadata = {TASK_METADATA: ctx.task_id}
    refusal = PermanentError(
        f"{field}: {where} exists; this TaskType does not replace objects (set options.overwrite)"
    )
    overwrite = overwrite_allowed(ctx)
    if not overwrite:
        info = store.stat(key)  # one HEAD: whether it exists and whose it is
        if info is not None:
            if not _ours(ctx, info):
                raise refusal
            overwrite = True
    try:
        return write(overwrite, metadata)
    except Conflict as exc:
        if _ours(ctx, store.stat(key)):
            return write(True, metadata)
        raise refusal from exc
