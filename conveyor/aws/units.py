"""DynamoDB write request units of real writes, by DynamoDB's published rules.

On-demand DynamoDB bills a write by the size of what it writes: one unit per started KB
of the item (for an update, the larger of the item before and after), plus, for every
global secondary index, the index entries the write puts or deletes (one unit per started
KB of the entry; an entry whose key changes is deleted and put: two writes) or rewrites
in place (a projected attribute changed). An index whose key attributes an item lacks
holds no entry for it (a sparse index); a keys-only entry whose keys stay is untouched.

``Meter`` wraps a DynamoDB client and prices each write it makes from the item as it was
before and as it is after (two consistent reads around the call, uncounted), against the
table's own key schema and projections (DescribeTable): the figure comes from the calls
the store really makes, not from a model of them. moto, which stands in for DynamoDB in
tests and benchmarks, reports no capacity of its own worth reading.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient

KB = 1024


def value_size(value: Mapping[str, Any]) -> int:
    """Bytes of one attribute value (DynamoDB's "Item sizes and formats")."""
    kind, data = next(iter(value.items()))
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        digits = data.lstrip("-").replace(".", "").lstrip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(value_size({kind[0]: v}) for v in data)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in data)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in data.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def units_for(size: int) -> int:
    return max(1, math.ceil(size / KB))


@dataclass(frozen=True)
class Index:
    name: str
    keys: tuple[str, ...]  # its hash (and range) key attributes
    projection: str  # KEYS_ONLY, INCLUDE or ALL
    included: tuple[str, ...] = ()

    def entry(self, item: Mapping[str, Any] | None, table_keys: tuple[str, ...]) -> dict[str, Any] | None:
        """The item's entry in this index, or None when it has none (a key attribute missing)."""
        if not item or any(k not in item for k in self.keys):
            return None
        if self.projection == "ALL":
            return dict(item)
        kept = (
            set(self.keys) | set(table_keys) | (set(self.included) if self.projection == "INCLUDE" else set())
        )
        return {k: v for k, v in item.items() if k in kept}


@dataclass(frozen=True)
class Layout:
    """A table's key and indexes, as DescribeTable tells them."""

    keys: tuple[str, ...]
    indexes: tuple[Index, ...]

    @classmethod
    def of(cls, description: Mapping[str, Any]) -> Layout:
        def keys(schema: list[Mapping[str, str]]) -> tuple[str, ...]:
            return tuple(k["AttributeName"] for k in sorted(schema, key=lambda k: k["KeyType"]))

        return cls(
            keys=keys(description["KeySchema"]),
            indexes=tuple(
                Index(
                    name=i["IndexName"],
                    keys=keys(i["KeySchema"]),
                    projection=i["Projection"]["ProjectionType"],
                    included=tuple(i["Projection"].get("NonKeyAttributes", ())),
                )
                for i in description.get("GlobalSecondaryIndexes", [])
            ),
        )

    def write_units(self, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> Counter[str]:
        """The units of one item write that took effect, by where they go (``table`` and
        each index's name); the table is billed even when the write changed nothing."""
        units: Counter[str] = Counter()
        units["table"] = units_for(max(item_size(before or {}), item_size(after or {})))
        for index in self.indexes:
            old, new = index.entry(before, self.keys), index.entry(after, self.keys)
            if old == new:  # no entry before or after, or the same one
                continue
            if old is not None and new is not None and all(old[k] == new[k] for k in index.keys):
                units[index.name] += units_for(max(item_size(old), item_size(new)))  # rewritten in place
            else:  # put, delete, or both when its key moved
                units[index.name] += sum(units_for(item_size(e)) for e in (old, new) if e is not None)
        return units


class Meter:
    """A DynamoDB client whose item writes (PutItem, UpdateItem, DeleteItem) are priced as
    they happen; every other call passes through. ``units`` sums them by destination."""

    WRITES = ("put_item", "update_item", "delete_item")

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table
        self.layout = Layout.of(client.describe_table(TableName=table)["Table"])
        self.units: Counter[str] = Counter()
        self.writes: list[tuple[str, Counter[str]]] = []  # (action, its units), in order

    def _image(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        found = self._client.get_item(TableName=self._table, Key=dict(key), ConsistentRead=True).get("Item")
        return dict(found) if found else None

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)
        if name not in self.WRITES:
            return call

        def metered(**kwargs: Any) -> Any:
            key = kwargs.get("Key") or {k: kwargs["Item"][k] for k in self.layout.keys}
            if kwargs.get("TableName") != self._table:
                return call(**kwargs)
            before = self._image(key)
            try:
                out = call(**kwargs)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                    # A failed condition is still billed: the item's size, on the table alone.
                    self._spent(name, Counter({"table": units_for(item_size(before or {}))}))
                raise
            self._spent(name, self.layout.write_units(before, self._image(key)))
            return out

        return metered

    def _spent(self, action: str, units: Counter[str]) -> None:
        self.units += units
        self.writes.append((action, units))

    def total(self) -> int:
        return sum(self.units.values())


def task_lifecycle(client: DynamoDBClient, table: str) -> dict[str, Counter[str]]:
    """The units of a small task's three writes on ``table`` (the store's own create,
    claim and successful finish, priced from the item before and after each)."""
    from conveyor.aws.dynamodb import DynamoTaskStore
    from conveyor.model import Status, Task, new_id, now

    meter = Meter(client, table)
    store = DynamoTaskStore(cast("DynamoDBClient", meter), table, 3600)
    task = Task(id=new_id(), type="echo", payload={"n": 1})
    store.create(task)
    claimed = store.claim(task.id, task.type, "worker-1", now()).task
    if claimed is None:
        raise RuntimeError("the measured task could not be claimed")
    store.finish(claimed, Status.SUCCEEDED, now(), result={"ok": True})
    create, claim, finish = (units for _, units in meter.writes)
    return {"create": create, "claim": claim, "finish": finish}
