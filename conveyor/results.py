"""What a handler may return: storable JSON that fits in the task's record."""

from __future__ import annotations

from typing import Any

from conveyor import jsonsafe
from conveyor.model import TaskError
from conveyor.ports import STORE_ITEM_BYTES

# A result is stored in the task's item beside its payload; the item holds STORE_ITEM_BYTES
# in all. A result gets at most MAX_RESULT_BYTES of JSON, and never more than the item has
# left after the payload and ITEM_RESERVE (attribute names, times, error text).
ITEM_BYTES = STORE_ITEM_BYTES
ITEM_RESERVE = 8 * 1024
MAX_RESULT_BYTES = 128 * 1024


def result_room(payload: Any) -> int:
    """How many bytes of JSON a result of a task with ``payload`` may take."""
    try:
        used = len(jsonsafe.dumps(payload).encode())
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError):
        used = 0  # an unreadable payload was withheld when read; the item check still applies
    return max(0, min(MAX_RESULT_BYTES, ITEM_BYTES - ITEM_RESERVE - used))


def checked_result(payload: Any, result: Any) -> tuple[Any, TaskError | None]:
    """A handler's result as it will be stored and served, or the permanent error that
    fails the task instead: a result that is not storable JSON (NaN, a lone surrogate,
    a set, nesting beyond jsonsafe.MAX_DEPTH) or one larger than ``result_room``. Either
    would otherwise break the finish write or every later read of the task."""
    try:
        value, encoded = jsonsafe.normalised(result)
    except jsonsafe.UnsafeJSON as exc:
        return None, TaskError(
            "InvalidResult", f"the result cannot be stored as JSON at {exc.pointer}: {exc.message}"
        )
    size, room = len(encoded.encode()), result_room(payload)
    if size > room:
        return None, TaskError(
            "ResultTooLarge", f"the result is {size} bytes as JSON; a task's result may take {room}"
        )
    return value, None
