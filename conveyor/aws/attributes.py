"""DynamoDB's typed attribute values, and the item a failed condition met: shared by the
task store and the flow-limits store, which write to the same table."""

from __future__ import annotations

from typing import Any, cast

from botocore.exceptions import ClientError


def string(value: str) -> dict[str, str]:
    return {"S": value}


def number(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


def old_item(exc: ClientError) -> dict[str, Any] | None:
    """The item a failed condition met, sent back with ReturnValuesOnConditionCheckFailure."""
    item = cast("dict[str, Any]", exc.response).get("Item")
    return dict(item) if item else None
