"""Fleet-wide flow control on DynamoDB: items of the task table, one per limit and key.

- ``limit#<type>#<digest(key)>``: a concurrency limit's leases, the map ``holders``
  ``{task id: {w: worker id, u: lease expiry (epoch ms)}}`` and a ``version``. An acquire
  is one conditional UpdateItem adding the holder while ``size(holders) < max``; when
  that is refused (full, or the item is new), the refusal returns the item, and if some
  leases have expired, the pruned map is written back conditionally on ``version``. Every
  write moves ``version`` on (ADD), so that write-back never undoes a racing acquire,
  renewal or release. Renewals and releases touch only this worker's own entry
  (conditional on ``w``).
- ``rate#<type>#<digest(key)>``: a rate limit's GCRA state, the number ``tat`` (epoch
  ms), moved on by a write conditional on its old value. The adapter remembers the last
  value it saw, so a reservation is one write unless another worker moved it meanwhile
  (then the failed condition returns the current value, and it writes again).

Neither carries ``kind``, ``status`` or ``type``: no index holds them and no task list
or count sees them. Each carries the TTL attribute ``expires_at``, a day past its last
lease or reservation, so the items of keys no longer used go away by themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from conveyor.aws.attributes import number as _n
from conveyor.aws.attributes import old_item
from conveyor.aws.attributes import string as _s
from conveyor.aws.clients import error_code, translated
from conveyor.errors import Unavailable
from conveyor.flowkeys import digest
from conveyor.lifecycle.flow import epoch_ms, from_epoch_ms, gcra, interval_ms
from conveyor.ports import Lease, SlotAnswer

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient

    from conveyor.ports import FlowLimits

log = logging.getLogger("conveyor.store")

# An item outlives its last lease or reservation by this long, then its TTL removes it.
IDLE_ITEM_SECONDS = 24 * 3600
# Conditional writes that lost a race are tried again this many times, then Unavailable.
RACE_RETRIES = 20


def slot_item_id(task_type: str, key: str) -> str:
    return f"limit#{task_type}#{digest(key)}"


def rate_item_id(task_type: str, key: str) -> str:
    return f"rate#{task_type}#{digest(key)}"


def _expiry(until_ms: int) -> dict[str, str]:
    return _n(until_ms // 1000 + IDLE_ITEM_SECONDS)


def _holders(item: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """The item's leases: {task id: (worker id, expiry ms)}; unreadable entries count as
    expired (dropped by the next pruning write)."""
    out: dict[str, tuple[str, int]] = {}
    for task_id, value in item.get("holders", {}).get("M", {}).items():
        try:
            entry = value["M"]
            out[task_id] = (entry["w"]["S"], int(entry["u"]["N"]))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _holder(worker_id: str, until_ms: int) -> dict[str, Any]:
    return {"M": {"w": _s(worker_id), "u": _n(until_ms)}}


class DynamoFlowLimits:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self.client = client
        self.table = table
        # The last ``tat`` seen per rate item: the first guess of the next conditional write.
        self._tat: dict[str, int | None] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _conditional(self, **args: Any) -> dict[str, Any] | None:
        """A conditional UpdateItem (or PutItem with ``Item``); its answer, or None when the
        condition failed (with the old item under ``"__old__"`` when asked for and one exists)."""
        call = self.client.put_item if "Item" in args else self.client.update_item
        try:
            with translated("dynamodb " + ("PutItem" if "Item" in args else "UpdateItem")):
                return dict(call(TableName=self.table, **args))
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            old = old_item(exc)
            return {"__old__": old} if old else None

    # -- concurrency ------------------------------------------------------------------------

    def acquire_slot(
        self,
        task_type: str,
        key: str,
        task_id: str,
        worker_id: str,
        max_slots: int,
        now: datetime,
        lease_until: datetime,
    ) -> SlotAnswer:
        item_id = slot_item_id(task_type, key)
        until = epoch_ms(lease_until)
        # The fast path: one write while there is room (or the task's lease is already ours).
        try:
            out = self._conditional(
                Key={"id": _s(item_id)},
                UpdateExpression="SET holders.#t = :h, expires_at = :e ADD version :one",
                # attribute_exists first: a new item has no map to take the size of.
                ConditionExpression=(
                    "(attribute_exists(holders) AND attribute_not_exists(holders.#t)"
                    " AND size(holders) < :max) OR holders.#t.w = :me"
                ),
                ExpressionAttributeNames={"#t": task_id},
                ExpressionAttributeValues={
                    ":h": _holder(worker_id, until),
                    ":e": _expiry(until),
                    ":max": _n(max_slots),
                    ":me": _s(worker_id),
                    ":one": _n(1),
                },
                ReturnValues="ALL_NEW",
                # Refused, the answer holds the item: the slow path needs no read.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            # A new item has no map to add to: DynamoDB refuses the path, not the condition.
            if error_code(exc) != "ValidationException":
                raise
            out = None
        if out is not None and "Attributes" in out:
            now_ms = epoch_ms(now)
            return SlotAnswer(True, sum(1 for _w, u in _holders(out["Attributes"]).values() if u > now_ms))
        item = (out or {}).get("__old__")
        return self._acquire_pruning(item_id, item, task_id, worker_id, max_slots, epoch_ms(now), until)

    def _acquire_pruning(
        self,
        item_id: str,
        item: dict[str, Any] | None,
        task_id: str,
        worker_id: str,
        max_slots: int,
        now_ms: int,
        until: int,
    ) -> SlotAnswer:
        """The slow path, from the item as a refused write found it (None: there is none):
        if expired leases leave room, write the live ones plus this one back, conditional
        on the version seen (a racing writer wins; its answer is the item to look at next)."""
        for _ in range(RACE_RETRIES):
            live = {t: h for t, h in _holders(dict(item or {})).items() if h[1] > now_ms}
            held = live.get(task_id)
            if (held is not None and held[0] != worker_id) or (held is None and len(live) >= max_slots):
                return SlotAnswer(False, len(live))
            live[task_id] = (worker_id, until)
            holders = {"M": {t: _holder(w, u) for t, (w, u) in live.items()}}
            if item is None:
                out = self._conditional(
                    Item={
                        "id": _s(item_id),
                        "holders": holders,
                        "version": _n(1),
                        "expires_at": _expiry(until),
                    },
                    ConditionExpression="attribute_not_exists(id)",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            else:
                version = int(item.get("version", {}).get("N", "0"))
                out = self._conditional(
                    Key={"id": _s(item_id)},
                    UpdateExpression="SET holders = :h, version = :next, expires_at = :e",
                    ConditionExpression="version = :v",
                    ExpressionAttributeValues={
                        ":h": holders,
                        ":next": _n(version + 1),
                        ":v": _n(version),
                        ":e": _expiry(max(until, *(u for _w, u in live.values()))),
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            if out is not None and "__old__" not in out:
                return SlotAnswer(True, len(live))
            item = (out or {}).get("__old__")  # None: deleted meanwhile (its TTL)
        raise Unavailable(f"dynamodb: {item_id} is too contended to acquire", 1)

    def renew_slots(self, leases: Sequence[Lease], worker_id: str, lease_until: datetime) -> list[Lease]:
        until = epoch_ms(lease_until)
        lost = []
        for lease in leases:
            out = self._conditional(
                Key={"id": _s(slot_item_id(lease.task_type, lease.key))},
                UpdateExpression="SET holders.#t.u = :u, expires_at = :e ADD version :one",
                ConditionExpression="holders.#t.w = :me",
                ExpressionAttributeNames={"#t": lease.task_id},
                ExpressionAttributeValues={
                    ":u": _n(until),
                    ":e": _expiry(until),
                    ":me": _s(worker_id),
                    ":one": _n(1),
                },
            )
            if out is None:
                lost.append(lease)
        return lost

    def release_slot(self, lease: Lease, worker_id: str) -> None:
        # Conditional on the entry being this worker's: a slower worker that lost the task
        # to a take-over never frees the new owner's slot.
        self._conditional(
            Key={"id": _s(slot_item_id(lease.task_type, lease.key))},
            UpdateExpression="REMOVE holders.#t ADD version :one",
            ConditionExpression="holders.#t.w = :me",
            ExpressionAttributeNames={"#t": lease.task_id},
            ExpressionAttributeValues={":me": _s(worker_id), ":one": _n(1)},
        )

    def slots_in_use(self, task_type: str, key: str, now: datetime) -> int:
        with translated("dynamodb GetItem"):
            item = self.client.get_item(
                TableName=self.table, Key={"id": _s(slot_item_id(task_type, key))}, ConsistentRead=True
            ).get("Item")
        now_ms = epoch_ms(now)
        return sum(1 for _w, u in _holders(dict(item or {})).values() if u > now_ms)

    # -- rate -------------------------------------------------------------------------------

    def reserve_rate(
        self, task_type: str, key: str, interval: float, capacity: int, now: datetime
    ) -> datetime:
        item_id = rate_item_id(task_type, key)
        with self._guard:
            lock = self._locks.setdefault(item_id, threading.Lock())
        # One at a time per item within the process: its own reservations never race each
        # other (each lost race costs a write); only other processes' can.
        with lock:
            return self._reserve(item_id, interval, capacity, now)

    def _reserve(self, item_id: str, interval: float, capacity: int, now: datetime) -> datetime:
        seen = self._tat.get(item_id)
        now_ms = epoch_ms(now)
        for _ in range(RACE_RETRIES):
            start, tat = gcra(seen, now_ms, interval_ms(interval), capacity)
            values = {":tat": _n(tat), ":e": _expiry(tat)}
            if seen is None:
                condition = "attribute_not_exists(tat)"
            else:
                condition = "tat = :seen"
                values[":seen"] = _n(seen)
            out = self._conditional(
                Key={"id": _s(item_id)},
                UpdateExpression="SET tat = :tat, expires_at = :e",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            if out is not None and "__old__" not in out:
                self._tat[item_id] = tat
                return from_epoch_ms(start)
            old = (out or {}).get("__old__") or {}
            seen = int(old["tat"]["N"]) if "tat" in old else None
        raise Unavailable(f"dynamodb: {item_id} is too contended to reserve", 1)


if TYPE_CHECKING:
    _limits: FlowLimits = DynamoFlowLimits(None, "")  # type: ignore[arg-type]
