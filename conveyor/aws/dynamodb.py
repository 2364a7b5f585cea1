"""The task store on DynamoDB: one table, task records plus worker and idempotency items.

Keys and indexes (created, or brought to this layout, by ``conveyor init``):
- ``id`` is the hash key. Task ids are ULIDs, so every index sorted on ``id`` is sorted by
  creation time and "newest first" is a backwards query.
- ``status-index`` (status, id), projecting ALL: by status; every task newest first is a
  merge of the five status partitions (one Query each, ``limit`` items at most); by status
  and type, filtered on type.
  With ``CONVEYOR_STATUS_SHARDS`` above 1 each status is spread over that many keys
  (``conveyor/aws/shards.py``): writes set a task's sharded value, conditions compare the
  status prefix, lists and counts read every key of a status.
- ``type-index`` (type, id), keys only: by type.
- ``fleet-index`` (fleet, id), keys only: the workers. Only worker items carry ``fleet``,
  so no task write touches this index.
A write costs one unit for the table plus one per index it touches (two where the index
key moves; none for a keys-only index whose key is unchanged), so the layout sets the
bill: creating a task writes the table, ``status-index`` and ``type-index`` (3 units),
each status change moves ``status-index`` (3 units): 9 for a task that is created,
claimed and finished. ``docs/ARCHITECTURE.md`` (Table layout) says what each unit buys.
Worker items (``worker#<id>``), idempotency items (``idem#<hash>``) and unique-key locks
(``unique#<type>#<key digest>``, naming the task that holds the key in ``task_id``) carry
a TTL attribute ``expires_at``, as do finished tasks. Schedule state items
(``schedule#<namespace>/<name>``, kind ``schedule``) have no status and no type, so no
task list or count sees them, and no TTL: they last as long as the schedule.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from botocore.exceptions import ClientError

from conveyor import jsonsafe
from conveyor.aws import shards
from conveyor.aws.attributes import number as _n
from conveyor.aws.attributes import old_item as _old_item
from conveyor.aws.attributes import string as _s
from conveyor.aws.clients import error_code, translated
from conveyor.errors import (
    Conflict,
    Duplicate,
    IdempotencyConflict,
    InvalidCursor,
    NotFound,
    RecordTooLarge,
    Unavailable,
)
from conveyor.model import (
    MAX_DELIVERIES,
    Delivery,
    NotifyState,
    Priority,
    Progress,
    Status,
    Task,
    TaskCopy,
    TaskError,
    TaskEvent,
    Waiting,
    WorkerInfo,
    copy_digest,
    creation_copy,
    from_rfc3339,
    is_task_id,
    to_rfc3339,
)
from conveyor.ports import GET_MANY_BATCH, Claim, Page, ScheduleState, UniqueLock, same_creation

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient
    from types_boto3_dynamodb.type_defs import PutTypeDef, TransactWriteItemTypeDef

log = logging.getLogger("conveyor.store")

# Every GSI of the table and its hash key; all are ranged on ``id``.
INDEXES = {"status-index": "status", "type-index": "type", "fleet-index": "fleet"}
KEYS_ONLY = {"type-index", "fleet-index"}
# The indexes a task item is in (``fleet`` is a worker attribute only).
TASK_INDEXES = {"status-index": "status", "type-index": "type"}
# Indexes of earlier layouts that ``conveyor init`` deletes: ``kind-index`` (kind, id) held
# every task (one unit per create) for the unfiltered list, now a merge of status-index.
OBSOLETE_INDEXES = ("kind-index",)
# A status-and-type list reads status-index pages and keeps the type's tasks: at most
# this many pages per request, then it answers with what it found and a cursor.
FILTERED_PAGES = 10
# Key prefixes of the items that are not tasks.
NOT_TASKS = ("worker#", "idem#", "schedule#", "unique#", "limit#", "rate#")
# Tries of a create whose transaction met another one on the same item (TransactionConflict).
TRANSACT_TRIES = 5
# Status-index keys read at once by one list or count when statuses are sharded.
PARALLEL_READS = 8
_Read = TypeVar("_Read")


def _ts(value: datetime) -> dict[str, str]:
    return {"S": to_rfc3339(value) or ""}


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


def task_to_item(task: Task, status_shards: int = 1) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": _s(task.id),
        "kind": _s("task"),
        "type": _s(task.type),
        "status": _s(shards.stored(task.status, task.id, status_shards)),
        "payload": _s(json.dumps(task.payload, separators=(",", ":"))),
        "attempts": _n(task.attempts),
        "max_attempts": _n(task.max_attempts),
        "created_at": _ts(task.created_at),
        "updated_at": _ts(task.updated_at),
    }
    for name in ("started_at", "finished_at", "run_at"):
        value = getattr(task, name)
        if value is not None:
            item[name] = _ts(value)
    if task.result is not None:
        item["result"] = _s(jsonsafe.dumps(task.result))
    if task.error is not None:
        item["error_type"] = _s(task.error.type)
        item["error_message"] = _s(task.error.message)
    if task.worker:
        item["worker"] = _s(task.worker)
    if task.idempotency_key:
        item["idempotency_key"] = _s(task.idempotency_key)
    if task.expires_at:
        item["expires_at"] = _n(task.expires_at)
    if task.submitter_scopes is not None:
        item["submitter_scopes"] = _s(" ".join(sorted(task.submitter_scopes)))
    item |= _reported(task.progress, task.events)
    if task.notify_url:
        item["notify_url"] = _s(task.notify_url)
    if task.submitter:
        item["submitter"] = _s(task.submitter)
    if task.notify_state is not None:
        item["notify_state"] = _s(task.notify_state.value)
    if task.deliveries:
        item["deliveries"] = _deliveries(task.deliveries)
    if task.priority is not Priority.NORMAL:  # absent: normal, so most items stay as small
        item["priority"] = _s(task.priority.value)
    if task.waiting is not None:
        item["waiting"] = _waiting(task.waiting)
    if task.unique_key is not None:
        item["unique_key"] = _s(task.unique_key)
    if task.status is Status.QUEUED and task.started_at is None and task.attempts == 0:
        # What a message's copy of the task must match for a claim to rest on it.
        item["copy_digest"] = _s(copy_digest(task.id, creation_copy(task)))
    return item


def _waiting(waiting: Waiting) -> dict[str, str]:
    return _s(json.dumps(waiting.to_json(), separators=(",", ":")))


def _read_waiting(item: dict[str, Any]) -> Waiting | None:
    data, _why = _decoded(item, "waiting")
    try:
        return Waiting.from_json(data) if isinstance(data, dict) else None
    except (KeyError, TypeError, ValueError):
        return None  # informational: never fails the task's read


def _deliveries(log: Sequence[Delivery]) -> dict[str, str]:
    # One JSON string, compared whole by record_delivery's condition.
    return _s(json.dumps([d.to_json() for d in log], separators=(",", ":")))


def _read_deliveries(item: dict[str, Any]) -> tuple[Delivery, ...]:
    log, _why = _decoded(item, "deliveries")
    try:
        return tuple(Delivery.from_json(d) for d in log or ())
    except (KeyError, TypeError, ValueError, AttributeError):
        return ()  # unreadable: shown empty rather than failing the task's read


def _reported(progress: Progress | None, events: Sequence[TaskEvent]) -> dict[str, Any]:
    """The attributes holding what a handler reported (JSON text, as payload and result)."""
    item: dict[str, Any] = {}
    if progress is not None:
        item["progress"] = _s(json.dumps(progress.to_json(), separators=(",", ":")))
    if events:
        item["events"] = _s(jsonsafe.dumps([e.to_json() for e in events]))
    return item


def _reports(item: dict[str, Any]) -> tuple[Progress | None, tuple[TaskEvent, ...]]:
    """What a handler reported, from an item; unreadable reports are dropped, never the
    record (they are informational)."""
    progress_json, _ = _decoded(item, "progress")
    events_json, _ = _decoded(item, "events")
    try:
        progress = Progress.from_json(progress_json) if isinstance(progress_json, dict) else None
        events = tuple(TaskEvent.from_json(e) for e in events_json) if isinstance(events_json, list) else ()
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, ()
    return progress, events


def _decoded(item: dict[str, Any], name: str) -> tuple[Any, str | None]:
    """An attribute holding JSON text, and why it could not be read (None when it could)."""
    value = item.get(name)
    if not value:
        return None, None
    try:
        return json.loads(value["S"]), None
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        # Corrupt or written by another writer: withheld, so the rest of the record reads.
        return None, f"{name}: {type(exc).__name__}"


def _updated_at(item: dict[str, Any], status: Status) -> datetime:
    """The latest instant the record holds: the claim and the finish write only their own
    (``started_at``, ``finished_at``), a clause less each in the two writes every task
    makes. A queued task's is ``updated_at`` exactly: the sweeper's write is conditioned on it."""
    stored: datetime = from_rfc3339(item["updated_at"]["S"])  # type: ignore[assignment]
    mark = "started_at" if status is Status.RUNNING else "finished_at" if status.terminal else None
    at = from_rfc3339(item[mark]["S"]) if mark and mark in item else None
    return max(stored, at) if at else stored


def item_to_task(item: dict[str, Any]) -> Task:
    def s(name: str) -> str | None:
        value = item.get(name)
        return value["S"] if value else None

    error = None
    if "error_type" in item:
        error = TaskError(s("error_type") or "", s("error_message") or "")
    payload, bad_payload = _decoded(item, "payload")
    result, bad_result = _decoded(item, "result")
    progress, events = _reports(item)
    unreadable = [why for why in (bad_payload, bad_result) if why]
    if unreadable:
        error = TaskError("UnreadableRecord", "stored JSON withheld: " + ", ".join(unreadable))
    status = shards.read(item["status"]["S"])
    return Task(
        id=item["id"]["S"],
        type=item["type"]["S"],
        payload=payload,
        status=status,
        attempts=int(item["attempts"]["N"]),
        max_attempts=int(item["max_attempts"]["N"]),
        created_at=from_rfc3339(s("created_at")),  # type: ignore[arg-type]
        updated_at=_updated_at(item, status),
        started_at=from_rfc3339(s("started_at")),
        finished_at=from_rfc3339(s("finished_at")),
        run_at=from_rfc3339(s("run_at")),
        result=result,
        error=error,
        worker=s("worker"),
        cancel_requested=bool(item.get("cancel_requested", {}).get("BOOL", False)),
        idempotency_key=s("idempotency_key"),
        expires_at=int(item["expires_at"]["N"]) if "expires_at" in item else None,
        submitter_scopes=frozenset(scopes.split()) if (scopes := s("submitter_scopes")) is not None else None,
        progress=progress,
        events=events,
        notify_url=s("notify_url"),
        submitter=s("submitter"),
        notify_state=_notify_state(s("notify_state")),
        deliveries=_read_deliveries(item),
        priority=Priority(s("priority") or Priority.NORMAL),
        waiting=_read_waiting(item),
        unique_key=s("unique_key"),
    )


def _owed(current: Task, notify: bool) -> tuple[str, dict[str, Any]]:
    """The SET clause (and its value) that marks the webhook pending in a finish outside the
    worker's attempt (TaskStore.cancel): when the type or the record names a webhook."""
    if notify or current.notify_url:
        return ", notify_state = :ns", {":ns": _s(NotifyState.PENDING.value)}
    return "", {}


def _notify_state(value: str | None) -> NotifyState | None:
    try:
        return NotifyState(value) if value else None
    except ValueError:
        return None


def readable_tasks(items: Sequence[dict[str, Any]]) -> list[Task]:
    """The tasks of a listed page; an item that is not a readable task record (a key or
    state another writer broke) is logged and left out rather than failing the page."""
    tasks = []
    for item in items:
        try:
            tasks.append(item_to_task(item))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            log.error("task record %s left out of a list: %s: %s", item.get("id"), type(exc).__name__, exc)
    return tasks


UNPROCESSED = {"BatchWriteItem": "UnprocessedItems", "BatchGetItem": "UnprocessedKeys"}


def _until_processed(action: str, call: Callable[..., Any], request: dict[str, Any]) -> list[Any]:
    """A batch request, re-sent with its unprocessed part (throttling) until none is left,
    backing off between tries as AWS advises (50 ms doubling to 3.2 s); the answers."""
    answers = []
    for attempt in range(8):
        with translated(f"dynamodb {action}"):
            answers.append(call(RequestItems=request))
        request = answers[-1].get(UNPROCESSED[action]) or {}
        if not request:
            return answers
        time.sleep(min(3.2, 0.05 * 2**attempt))
    raise Unavailable(f"dynamodb {action}: part of the batch was left unprocessed", 2)


def _batch_get(client: DynamoDBClient, table: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for start in range(0, len(ids), 100):
        request = {table: {"Keys": [{"id": _s(i)} for i in dict.fromkeys(ids[start : start + 100])]}}
        for out in _until_processed("BatchGetItem", client.batch_get_item, request):
            items += out.get("Responses", {}).get(table, [])
    return items


def _encode_cursor(key: dict[str, Any]) -> str:
    raw = json.dumps({k: v["S"] for k, v in key.items()}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, key: str, value: str) -> dict[str, Any]:
    """The start key a cursor from ``_encode_cursor`` holds for this index (``key``) and
    value; anything else is refused before it reaches DynamoDB, which would answer a
    malformed start key with an error, not an empty page."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor from exc
    if (
        not isinstance(data, dict)
        or set(data) != {"id", key}
        or data[key] != value
        or not is_task_id(data["id"])
    ):
        raise InvalidCursor
    return {k: {"S": v} for k, v in data.items()}


class DynamoTaskStore:
    def __init__(
        self, client: DynamoDBClient, table: str, retention_seconds: int, status_shards: int = 1
    ) -> None:
        self.client = client
        self.table = table
        self.retention = retention_seconds
        self.shards = status_shards  # conveyor/aws/shards.py
        self._pool: ThreadPoolExecutor | None = None  # the shards' reads, made when first needed

    def _status(self, status: Status, task_id: str) -> dict[str, str]:
        """The value a write sets ``status`` to (conditions compare the plain prefix)."""
        return _s(shards.stored(status, task_id, self.shards))

    # -- writes at submit -------------------------------------------------------------

    def create(
        self, task: Task, body_hash: str | None = None, lock: UniqueLock | None = None
    ) -> tuple[Task, bool]:
        item = task_to_item(task, self.shards)
        if not task.idempotency_key and lock is None:
            try:
                with translated("dynamodb PutItem"):
                    # On a failed condition the item that is there comes back: no second read.
                    self.client.put_item(
                        TableName=self.table,
                        Item=item,
                        ConditionExpression="attribute_not_exists(id)",
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                return self._created_before(task, _old_item(exc), exc)
            return task, True
        # The task, its idempotency item and its unique lock are written together, or not at all.
        put: PutTypeDef = {
            "TableName": self.table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(id)",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        items: list[TransactWriteItemTypeDef] = [{"Put": put}]
        if task.idempotency_key:
            items.append({"Put": self._idem_put(task, body_hash)})
        if lock is not None:
            items += self._lock_writes(task.id, task.created_at, lock)
        reasons = self._transact(items)
        if reasons is None:
            return task, True
        codes = [r.get("Code") for r in reasons]
        at = 1
        if task.idempotency_key:
            # Idempotency first: a repeat gets its task whatever holds the unique key now.
            if codes[at] == "ConditionalCheckFailed":
                return self._idempotent_repeat(task.idempotency_key, body_hash)
            at += 1
        if lock is not None:
            if codes[at] == "ConditionalCheckFailed":
                holder = (reasons[at].get("Item") or {}).get("task_id", {}).get("S")
                if holder == task.id:  # this very create took effect; its answer was lost
                    stored = self.get(task.id, consistent=True)
                    if stored is not None and same_creation(stored, task):
                        return stored, True
                raise Duplicate("the unique key is held by another task", holder or "")
            if lock.cancel and codes[at + 1] == "ConditionalCheckFailed":
                raise Duplicate("the task holding the unique key is no longer queued", lock.take_from or "")
        if codes[0] == "ConditionalCheckFailed":
            old = reasons[0].get("Item")
            return self._created_before(task, dict(old) if old else None, None)
        raise Unavailable(f"dynamodb TransactWriteItems: cancelled ({', '.join(map(str, codes))})")

    def _created_before(
        self, task: Task, old: dict[str, Any] | None, exc: Exception | None
    ) -> tuple[Task, bool]:
        """A create whose id exists: the retry of one that took effect (its answer was lost
        and botocore's retry then failed the condition), or a Conflict."""
        stored = readable_tasks([old]) if old and old.get("kind", {}).get("S") == "task" else []
        if stored and same_creation(stored[0], task):
            return stored[0], True
        raise Conflict(f"task {task.id} exists") from exc

    def _idem_put(self, task: Task, body_hash: str | None) -> PutTypeDef:
        return {
            "TableName": self.table,
            "Item": {
                "id": _s("idem#" + (task.idempotency_key or "")),
                "task_id": _s(task.id),
                "body_hash": _s(body_hash or ""),
                "expires_at": _n(_epoch(task.created_at) + self.retention),
            },
            "ConditionExpression": "attribute_not_exists(id)",
        }

    def _lock_writes(self, taker: str, at: datetime, lock: UniqueLock) -> list[TransactWriteItemTypeDef]:
        """The lock's put for task ``taker`` (free: absent, or held by ``take_from`` or by
        ``taker`` itself) and, for a replace, the holder's cancel as of ``at``, conditional
        on its still being queued."""
        condition = "attribute_not_exists(id) OR task_id = :taker"
        values = {":taker": _s(taker)}
        if lock.take_from is not None:
            condition += " OR task_id = :stale"
            values[":stale"] = _s(lock.take_from)
        put: PutTypeDef = {
            "TableName": self.table,
            "Item": {"id": _s(lock.id), "task_id": _s(taker), "expires_at": _n(lock.expires_at)},
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        writes: list[TransactWriteItemTypeDef] = [{"Put": put}]
        if lock.cancel and lock.take_from is not None:
            owed = ", notify_state = :ns" if lock.notify else ""
            values = {
                ":c": self._status(Status.CANCELLED, lock.take_from),
                ":now": _ts(at),
                ":exp": _n(_epoch(at) + self.retention),
                ":q": _s(Status.QUEUED.value),
            } | ({":ns": _s(NotifyState.PENDING.value)} if lock.notify else {})
            writes.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {"id": _s(lock.take_from)},
                        "UpdateExpression": "SET #s = :c, finished_at = :now, updated_at = :now, "
                        "expires_at = :exp" + owed + " REMOVE waiting",
                        "ConditionExpression": "begins_with(#s, :q)",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": values,
                    }
                }
            )
        return writes

    def _transact(self, items: list[TransactWriteItemTypeDef]) -> list[dict[str, Any]] | None:
        """Run the transaction: None when it was written, else its cancellation reasons
        (one per item, in order). A clash with a concurrent transaction on one of its items
        is tried again, briefly backing off."""
        for attempt in range(TRANSACT_TRIES):
            try:
                with translated("dynamodb TransactWriteItems"):
                    self.client.transact_write_items(TransactItems=items)
                return None
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise
                reasons = [
                    dict(r) for r in cast("dict[str, Any]", exc.response).get("CancellationReasons", [])
                ]
            if len(reasons) != len(items):
                raise Unavailable("dynamodb TransactWriteItems: cancelled without its reasons")
            if not any(r.get("Code") == "TransactionConflict" for r in reasons):
                return reasons
            time.sleep(0.02 * 2**attempt)
        raise Unavailable("dynamodb TransactWriteItems: kept conflicting with concurrent writes")

    def _idempotent_repeat(self, key: str, body_hash: str | None) -> tuple[Task, bool]:
        with translated("dynamodb GetItem"):
            found = self.client.get_item(
                TableName=self.table, Key={"id": _s("idem#" + key)}, ConsistentRead=True
            ).get("Item")
        if not found:
            raise Conflict("idempotency key is being written by a concurrent request")
        if found["body_hash"]["S"] != (body_hash or ""):
            raise IdempotencyConflict("Idempotency-Key was already used with a different request body")
        existing = self.get(found["task_id"]["S"], consistent=True)
        if existing is None:
            raise IdempotencyConflict("Idempotency-Key refers to a task that has expired")
        return existing, False

    def create_many(self, tasks: Sequence[Task]) -> None:
        for start in range(0, len(tasks), 25):
            chunk = tasks[start : start + 25]
            requests = [{"PutRequest": {"Item": task_to_item(t, self.shards)}} for t in chunk]
            _until_processed("BatchWriteItem", self.client.batch_write_item, {self.table: requests})

    # -- reads --------------------------------------------------------------------------

    def _item(self, task_id: str, consistent: bool = True) -> dict[str, Any] | None:
        """A task's item as stored (None: none, or not a task)."""
        if task_id.startswith(NOT_TASKS):
            return None
        with translated("dynamodb GetItem"):
            item = self.client.get_item(
                TableName=self.table, Key={"id": _s(task_id)}, ConsistentRead=consistent
            ).get("Item")
        if not item or item.get("kind", {}).get("S") != "task":
            return None
        return dict(item)

    def get(self, task_id: str, consistent: bool = False) -> Task | None:
        item = self._item(task_id, consistent)
        found = readable_tasks([item]) if item else []
        return found[0] if found else None

    def query(
        self,
        status: Status | None = None,
        task_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        if status:
            # A cursor names its list's status, so another list's is refused.
            values = shards.partitions(status, self.shards)
            return self._merged(values, limit, cursor, ("status", status.value), task_type)
        if task_type:
            return self._by_type(task_type, limit, cursor)
        return self._newest(limit, cursor)

    def _by_type(self, task_type: str, limit: int, cursor: str | None) -> Page:
        """One page of ``type-index`` (keys only), then the records behind it."""
        args: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "type-index",
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": "type"},
            "ExpressionAttributeValues": {":v": _s(task_type)},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            args["ExclusiveStartKey"] = _decode_cursor(cursor, "type", task_type)
        with translated("dynamodb Query"):
            out = self.client.query(**args)
        last = out.get("LastEvaluatedKey")
        # A short page with a key left (DynamoDB's 1 MB page) still has a next page; a
        # cursor may lead to an empty last page, never past an item.
        return Page(self._fetch(out.get("Items", [])), _encode_cursor(last) if last else None)

    def _status_query(
        self,
        status: str,
        *,
        newest_first: bool = True,
        limit: int | None = None,
        below: str | None = None,
        count: bool = False,
        start: dict[str, Any] | None = None,
        task_type: str | None = None,
    ) -> dict[str, Any]:
        """One page of a ``status-index`` partition (ids below ``below``, if given; with
        ``task_type``, filtered on it: ``limit`` counts the items read, not those kept)."""
        args: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "status-index",
            "KeyConditionExpression": "#s = :v",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":v": _s(status)},
            "ScanIndexForward": not newest_first,
        }
        if limit is not None:
            args["Limit"] = limit
        if below:
            args["KeyConditionExpression"] += " AND id < :below"
            args["ExpressionAttributeValues"][":below"] = _s(below)
        if count:
            args["Select"] = "COUNT"
        if start:
            args["ExclusiveStartKey"] = start
        if task_type is not None:
            args["FilterExpression"] = "#t = :t"
            args["ExpressionAttributeNames"]["#t"] = "type"
            args["ExpressionAttributeValues"][":t"] = _s(task_type)
        with translated("dynamodb Query"):
            return dict(self.client.query(**args))

    def _newest(self, limit: int, cursor: str | None) -> Page:
        """Every task newest first: the newest ``limit`` of each status partition, merged.
        Reads at most 5 x ``limit`` index items (x the partitions per status, with status
        shards), no filter; the cursor is the last id answered (``{"kind": "task", "id":
        ...}``, the shape of the former index's)."""
        values = [value for status in Status for value in shards.partitions(status, self.shards)]
        return self._merged(values, limit, cursor, ("kind", "task"))

    def _merged(
        self,
        values: Sequence[str],
        limit: int,
        cursor: str | None,
        names: tuple[str, str],
        task_type: str | None = None,
    ) -> Page:
        """The newest ``limit`` tasks of these ``status-index`` partitions, merged by id
        (with ``task_type``: of that type). The cursor is the last id answered beside
        ``names`` (the list it belongs to: ``("status", "queued")``, the shape of a
        DynamoDB start key of that partition, or ``("kind", "task")`` for every task)."""
        after = _decode_cursor(cursor, *names)["id"]["S"] if cursor else None
        found: dict[str, dict[str, Any]] = {}
        # Below the id a partition was read down to it may hold more (DynamoDB's 1 MB page,
        # the limit, the filtered page cap): nothing older than the highest such id may be
        # answered before that partition is read on.
        floor = ""
        # A filtered list reads at most FILTERED_PAGES pages in all, at least one a key.
        pages = max(1, FILTERED_PAGES // len(values))
        share = self._share(limit)

        def read(value: str) -> tuple[list[dict[str, Any]], str | None]:
            want = share if shards.SEPARATOR in value else limit
            return self._partition_page(value, want, after, task_type, pages)

        for page, read_to in self._each(read, values):
            # A task whose status changed between two of these queries may be in both
            # answers (the index is eventually consistent): once, as the later read saw it.
            found |= {i["id"]["S"]: i for i in page}
            if read_to is not None:
                floor = max(floor, read_to)
        ids = sorted((i for i in found if i >= floor), reverse=True)
        more = bool(floor) or len(ids) > limit
        ids = ids[:limit]
        # Nothing answerable yet (every kept item below the floor): on from the floor.
        last = ids[-1] if ids else floor
        next_cursor = _encode_cursor({names[0]: _s(names[1]), "id": _s(last)}) if more and last else None
        return Page(readable_tasks([found[i] for i in ids]), next_cursor)

    def _share(self, limit: int) -> int:
        """How many of a page's ``limit`` tasks one shard's key is asked for. A shard holds
        about 1/n of a status's newest tasks (ids spread by hash), so twice that, plus one,
        seldom falls short; when it does, the floor shortens the page, never skips a task."""
        return min(limit, 2 * -(-limit // self.shards) + 1)

    def _each(self, read: Callable[[str], _Read], values: Sequence[str]) -> list[_Read]:
        """``read`` of every key, in order; with status shards, several at a time (a list
        of every task reads 5 x (1 + n) keys)."""
        if self.shards <= 1:
            return [read(v) for v in values]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PARALLEL_READS, thread_name_prefix="conveyor-shards")
        return list(self._pool.map(read, values))

    def _partition_page(
        self, value: str, limit: int, below: str | None, task_type: str | None, pages: int = FILTERED_PAGES
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Up to ``limit`` items of one ``status-index`` partition, newest first, with ids
        below ``below`` (with ``task_type``: of that type, reading at most ``pages``
        pages); and the id read down to when the partition may hold more (else None)."""
        items: list[dict[str, Any]] = []
        start = None
        for _ in range(pages if task_type else 1):
            out = self._status_query(
                value,
                limit=max(limit, 100) if task_type else limit,
                below=below,
                start=start,
                task_type=task_type,
            )
            items += out.get("Items", [])
            start = out.get("LastEvaluatedKey")
            if len(items) >= limit or not start:
                break
        if len(items) > limit:
            items = items[:limit]
            return items, items[-1]["id"]["S"]
        return items, start["id"]["S"] if start else None

    def _fetch(self, keys: Sequence[dict[str, Any]]) -> list[Task]:
        """The task records behind a keys-only page, in the page's order (a record that
        expired in between is left out)."""
        found = {i["id"]["S"]: i for i in _batch_get(self.client, self.table, [k["id"]["S"] for k in keys])}
        return readable_tasks([found[k["id"]["S"]] for k in keys if k["id"]["S"] in found])

    def count_by_status(self) -> dict[Status, int]:
        counts: dict[Status, int] = {}

        def count(value: str) -> int:
            total = 0
            start = None
            while True:
                out = self._status_query(value, count=True, start=start)
                total += int(out.get("Count", 0))
                if "LastEvaluatedKey" not in out:
                    return total
                start = out["LastEvaluatedKey"]

        for status in Status:
            counts[status] = sum(self._each(count, shards.partitions(status, self.shards)))
        return counts

    def _queued(self, limit: int, before_id: str | None = None) -> list[Task]:
        # The oldest ``limit`` of each partition hold the oldest ``limit`` of all.
        def oldest(value: str) -> list[dict[str, Any]]:
            out = self._status_query(value, newest_first=False, limit=limit, below=before_id)
            return list(out.get("Items", []))

        items = [
            i for page in self._each(oldest, shards.partitions(Status.QUEUED, self.shards)) for i in page
        ]
        items.sort(key=lambda i: str(i["id"]["S"]))
        return [item_to_task(i) for i in items[:limit]]

    def oldest_queued(self) -> Task | None:
        found = self._queued(1)
        return found[0] if found else None

    def queued_before(self, before: datetime, limit: int = 100) -> list[Task]:
        from ulid import ULID

        bound = str(ULID.from_timestamp(before.timestamp()))
        # A ULID built from a timestamp has random low bits: compare on the time part only.
        return self._queued(limit, bound[:10] + "0" * 16)

    def mark_redispatched(self, task: Task, at: datetime) -> bool:
        # Strictly later than the copy's stamp, or a second caller holding the same copy in
        # the same millisecond would pass the condition too.
        stamp = max(at, task.updated_at + timedelta(milliseconds=1))
        return (
            self._update(
                task.id,
                "SET updated_at = :now",
                "begins_with(#s, :q) AND updated_at = :seen",
                {":now": _ts(stamp), ":q": _s("queued"), ":seen": _ts(task.updated_at)},
                returns="NONE",
            )
            is not None
        )

    # -- the worker's transitions -------------------------------------------------------

    def _update(
        self,
        task_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
        return_old_on_failure: bool = False,
        returns: str = "ALL_NEW",
    ) -> dict[str, Any] | None:
        """A conditional UpdateItem; returns the new item ({} with ``returns="NONE"``), or
        None if the condition failed (with ``return_old_on_failure``: {"__old__": item}
        when the item exists).

        Every condition compares ``status``, which only task items carry, so it fails on
        a missing item without an ``attribute_exists`` clause (moto's CPU per call grows
        with each clause)."""
        args: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"id": _s(task_id)},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ReturnValues": returns,
        }
        names = dict(names or {})
        if "#s" in update or "#s" in condition:
            names["#s"] = "status"
        if names:
            args["ExpressionAttributeNames"] = names
        if return_old_on_failure:
            args["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            with translated("dynamodb UpdateItem"):
                return dict(self.client.update_item(**args).get("Attributes", {}))
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            old = _old_item(exc) if return_old_on_failure else None
            return {"__old__": old} if old else None

    def claim(
        self, task_id: str, task_type: str, worker_id: str, at: datetime, copy: TaskCopy | None = None
    ) -> Claim:
        if task_id.startswith(NOT_TASKS):
            return Claim(None, None)
        if copy is not None:
            claimed = self._claim_copy(task_id, copy, worker_id, at)
            if claimed is not None:
                return claimed
        # moto's CPU per UpdateItem grows with each clause (about 0.5 ms per SET clause,
        # measured): ADD is cheaper than SET x = x + 1, and cancel_requested is reset on
        # every way back to queued rather than here.
        out = self._update(
            task_id,
            "SET #s = :r, started_at = :now, worker = :w ADD attempts :one REMOVE waiting",
            "begins_with(#s, :q) AND #t = :type AND (attribute_not_exists(run_at) OR run_at <= :now)",
            {
                ":r": self._status(Status.RUNNING, task_id),
                ":q": _s("queued"),
                ":type": _s(task_type),
                ":one": _n(1),
                ":now": _ts(at),
                ":w": _s(worker_id),
            },
            names={"#t": "type"},
            return_old_on_failure=True,
        )
        if out is None:
            # The condition failed and DynamoDB returned no old item: there is none.
            return Claim(None, None)
        if "__old__" in out:
            return Claim(None, item_to_task(out["__old__"]))
        return Claim(item_to_task(out), None)

    def _claim_copy(self, task_id: str, copy: TaskCopy, worker_id: str, at: datetime) -> Claim | None:
        """The first attempt's claim resting on the message's copy of the task: the write
        holds only while the record is queued and still as created, as the copy says (its
        digest), so the copy is the record and nothing need come back. None: the
        record is queued but not as the copy says (started before, retried, or not this
        copy); the claim by id decides."""
        out = self._update(
            task_id,
            "SET #s = :r, started_at = :now, worker = :w, attempts = :one",
            # Every way back to queued after an attempt (requeue, retry) removes the digest.
            "begins_with(#s, :q) AND copy_digest = :d",
            {
                ":r": self._status(Status.RUNNING, task_id),
                ":q": _s("queued"),
                ":d": _s(copy.digest),
                ":one": _n(1),
                ":now": _ts(at),
                ":w": _s(worker_id),
            },
            return_old_on_failure=True,
            returns="NONE",
        )
        if out is None:
            return Claim(None, None)
        if "__old__" in out:
            current = item_to_task(out["__old__"])
            return None if current.status is Status.QUEUED else Claim(None, current)
        task = copy.task.with_(
            status=Status.RUNNING, attempts=1, started_at=at, updated_at=at, worker=worker_id
        )
        return Claim(task, None)

    def take_over(self, task: Task, worker_id: str, at: datetime) -> Task | None:
        out = self._update(
            task.id,
            "SET started_at = :now, updated_at = :now, worker = :w ADD attempts :one",
            "begins_with(#s, :r) AND worker = :dead AND attempts = :n",
            {
                ":one": _n(1),
                ":now": _ts(at),
                ":w": _s(worker_id),
                ":r": _s("running"),
                ":dead": _s(task.worker or ""),
                ":n": _n(task.attempts),
            },
        )
        return item_to_task(out) if out else None

    def _owned(self, task: Task) -> tuple[str, dict[str, Any]]:
        return (
            "begins_with(#s, :r) AND worker = :w AND attempts = :n",
            {":r": _s("running"), ":w": _s(task.worker or ""), ":n": _n(task.attempts)},
        )

    def finish(
        self,
        task: Task,
        status: Status,
        at: datetime,
        result: Any = None,
        error: TaskError | None = None,
        retention_seconds: int | None = None,
        notify: bool = False,
    ) -> Task | None:
        condition, values = self._owned(task)
        expires = _epoch(at) + (retention_seconds or self.retention)
        sets = [
            "#s = :st",
            "finished_at = :now",  # updated_at too (``_updated_at``)
            "expires_at = :exp",
        ]
        if notify:
            # In the finish write itself: no moment where the task is finished and nothing
            # says its webhook is owed (the task's message, come back, reads this).
            sets.append("notify_state = :ns")
            values[":ns"] = _s(NotifyState.PENDING.value)
        values |= {
            ":st": self._status(status, task.id),
            ":now": _ts(at),
            ":exp": _n(expires),
        }
        names = None
        if result is not None:
            # First: DynamoDB refuses an oversized update whole, but moto applies the
            # clauses in order until one overflows; a result first leaves nothing applied.
            sets.insert(0, "#res = :res")
            values[":res"] = _s(jsonsafe.dumps(result))
            names = {"#res": "result"}
        if error is not None:
            sets += ["error_type = :et", "error_message = :em"]
            values |= {":et": _s(error.type), ":em": _s(error.message)}
        update = "SET " + ", ".join(sets)
        if error is None and task.error is not None:
            # An earlier attempt's error; the claimed task carries it when there is one.
            update += " REMOVE error_type, error_message"
        # Nothing read back: the new record is the claimed one with these changes.
        try:
            if self._update(task.id, update, condition, values, names, returns="NONE") is None:
                return None
        except ClientError as exc:
            if error_code(exc) == "ValidationException" and "maximum allowed size" in str(exc):
                raise RecordTooLarge(f"dynamodb UpdateItem: {exc}") from exc
            raise
        return task.with_(
            status=status,
            finished_at=at,
            updated_at=at,
            result=result,
            error=error,
            expires_at=expires,
            notify_state=NotifyState.PENDING if notify else None,
        )

    def record_delivery(self, task: Task, delivery: Delivery, state: NotifyState) -> Task | None:
        log = (*task.deliveries, delivery)[-MAX_DELIVERIES:]
        values: dict[str, Any] = {
            ":log": _deliveries(log),
            ":ns": _s(state.value),
            ":fin": _ts(task.finished_at) if task.finished_at else _s(""),
        }
        if task.deliveries:
            seen = "deliveries = :old"
            values[":old"] = _deliveries(task.deliveries)
        else:
            seen = "attribute_not_exists(deliveries)"
        out = self._update(
            task.id,
            "SET deliveries = :log, notify_state = :ns",
            f"finished_at = :fin AND {seen}",
            values,
            returns="NONE",
        )
        if out is None:
            return None
        return task.with_(deliveries=log, notify_state=state)

    def set_waiting(self, task_id: str, waiting: Waiting | None, at: datetime) -> bool:
        if task_id.startswith(NOT_TASKS):
            return False
        values: dict[str, Any] = {":q": _s("queued"), ":now": _ts(at)}
        update = "SET updated_at = :now REMOVE waiting"
        if waiting is not None:
            update = "SET updated_at = :now, waiting = :w"
            values[":w"] = _waiting(waiting)
        return self._update(task_id, update, "begins_with(#s, :q)", values, returns="NONE") is not None

    def requeue(self, task: Task, run_at: datetime, error: TaskError, at: datetime) -> bool:
        condition, values = self._owned(task)
        values |= {
            ":q": self._status(Status.QUEUED, task.id),
            ":run": _ts(run_at),
            ":now": _ts(at),
            ":et": _s(error.type),
            ":em": _s(error.message),
        }
        out = self._update(
            task.id,
            "SET #s = :q, run_at = :run, updated_at = :now, "
            "error_type = :et, error_message = :em, cancel_requested = :f REMOVE copy_digest",
            condition,
            values | {":f": {"BOOL": False}},
            returns="NONE",
        )
        return out is not None

    def fail_unfinished(
        self, task_id: str, error: TaskError, at: datetime, notify: bool = False
    ) -> Task | None:
        item = self._item(task_id)
        found = readable_tasks([item]) if item else []
        if item is None or not found or found[0].status.terminal:
            return None
        current = found[0]
        owed, values = _owed(current, notify)
        out = self._update(
            task_id,
            "SET #s = :f, finished_at = :now, updated_at = :now, "
            "error_type = :et, error_message = :em, expires_at = :exp" + owed,
            "begins_with(#s, :cur) AND updated_at = :seen",
            {
                ":f": self._status(Status.FAILED, task_id),
                ":now": _ts(at),
                ":et": _s(error.type),
                ":em": _s(error.message),
                ":exp": _n(_epoch(at) + self.retention),
                ":cur": _s(current.status.value),
                ":seen": item["updated_at"],  # as stored: a running task's reads as its start
            }
            | values,
        )
        return item_to_task(out) if out else None

    # -- the API's transitions ----------------------------------------------------------

    def cancel(self, task_id: str, at: datetime, notify: bool = False) -> Task:
        for _ in range(5):
            current = self.get(task_id, consistent=True)
            if current is None:
                raise NotFound(task_id)
            if current.status.terminal:
                raise Conflict(
                    f"task is {current.status.value}; only queued or running tasks can be cancelled"
                )
            if current.status is Status.QUEUED:
                owed, values = _owed(current, notify)
                out = self._update(
                    task_id,
                    # A cancelled task no longer waits for a flow limit.
                    "SET #s = :c, finished_at = :now, updated_at = :now, expires_at = :exp"
                    + owed
                    + " REMOVE waiting",
                    "begins_with(#s, :q)",
                    {
                        ":c": self._status(Status.CANCELLED, task_id),
                        ":now": _ts(at),
                        ":exp": _n(_epoch(at) + self.retention),
                        ":q": _s("queued"),
                    }
                    | values,
                )
            else:
                out = self._update(
                    task_id,
                    "SET cancel_requested = :t, updated_at = :now",
                    "begins_with(#s, :r) AND attempts = :n",
                    {
                        ":t": {"BOOL": True},
                        ":now": _ts(at),
                        ":r": _s("running"),
                        ":n": _n(current.attempts),
                    },
                )
            if out is not None:
                return item_to_task(out)
        raise Conflict("task changed state while it was being cancelled; try again")

    def retry(self, task_id: str, at: datetime, lock: UniqueLock | None = None) -> Task:
        current = self.get(task_id, consistent=True)
        if current is None:
            raise NotFound(task_id)
        if current.status not in (Status.FAILED, Status.CANCELLED):
            raise Conflict(f"task is {current.status.value}; only failed or cancelled tasks can be retried")
        update = (
            "SET #s = :q, attempts = :zero, updated_at = :now, "
            "cancel_requested = :f "
            "REMOVE started_at, finished_at, run_at, error_type, error_message, #res, "
            "expires_at, worker, #pr, notify_state, copy_digest"
        )
        values: dict[str, Any] = {
            ":q": self._status(Status.QUEUED, task_id),
            ":zero": _n(0),
            ":now": _ts(at),
            ":f": {"BOOL": False},
            ":cur": _s(current.status.value),
        }
        names = {"#res": "result", "#pr": "progress"}
        changed = Conflict("task changed state while it was being retried; try again")
        if lock is None:
            out = self._update(task_id, update, "begins_with(#s, :cur)", values, names=names)
            if out is None:
                raise changed
            return item_to_task(out)
        # Queued again only together with its unique key: never a second active holder.
        again: TransactWriteItemTypeDef = {
            "Update": {
                "TableName": self.table,
                "Key": {"id": _s(task_id)},
                "UpdateExpression": update,
                "ConditionExpression": "begins_with(#s, :cur)",
                "ExpressionAttributeNames": names | {"#s": "status"},
                "ExpressionAttributeValues": values,
            }
        }
        reasons = self._transact([again, *self._lock_writes(task_id, at, lock)])
        if reasons is not None:
            if reasons[1].get("Code") == "ConditionalCheckFailed":
                holder = (reasons[1].get("Item") or {}).get("task_id", {}).get("S")
                raise Duplicate("the unique key is held by another task", holder or "")
            raise changed
        out_task = self.get(task_id, consistent=True)
        if out_task is None:
            raise NotFound(task_id)
        return out_task

    # -- schedules --------------------------------------------------------------------------

    def schedule_state(self, key: str) -> ScheduleState | None:
        with translated("dynamodb GetItem"):
            item = self.client.get_item(
                TableName=self.table, Key={"id": _s("schedule#" + key)}, ConsistentRead=True
            ).get("Item")
        if not item:
            return None

        def s(name: str) -> str | None:
            return item[name]["S"] if name in item else None

        return ScheduleState(
            key=key,
            last_slot=from_rfc3339(s("last_slot")),
            last_task_id=s("last_task_id"),
            last_run_at=from_rfc3339(s("last_run_at")),
        )

    def advance_schedule(
        self, key: str, slot: datetime, task_id: str | None = None, run_at: datetime | None = None
    ) -> bool:
        update = "SET kind = :k, last_slot = :s, slot_epoch = :e"
        values: dict[str, Any] = {":k": _s("schedule"), ":s": _ts(slot), ":e": _n(slot.timestamp())}
        if task_id is not None:
            update += ", last_task_id = :t, last_run_at = :r"
            values |= {":t": _s(task_id), ":r": _ts(run_at or slot)}
        try:
            with translated("dynamodb UpdateItem"):
                self.client.update_item(
                    TableName=self.table,
                    Key={"id": _s("schedule#" + key)},
                    UpdateExpression=update,
                    # Only forward: of replicas racing on one slot, one moves it.
                    ConditionExpression="attribute_not_exists(slot_epoch) OR slot_epoch < :e",
                    ExpressionAttributeValues=values,
                )
            return True
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise

    def record_schedule_task(self, key: str, task_id: str, run_at: datetime) -> None:
        with translated("dynamodb UpdateItem"):
            self.client.update_item(
                TableName=self.table,
                Key={"id": _s("schedule#" + key)},
                UpdateExpression="SET kind = :k, last_task_id = :t, last_run_at = :r",
                ExpressionAttributeValues={":k": _s("schedule"), ":t": _s(task_id), ":r": _ts(run_at)},
            )

    def ping(self) -> None:
        with translated("dynamodb DescribeTable"):
            self.client.describe_table(TableName=self.table)

    # -- live progress ----------------------------------------------------------------------

    def record_progress(self, task: Task, progress: Progress | None, events: Sequence[TaskEvent]) -> bool:
        condition, values = self._owned(task)
        reported = _reported(progress, events)
        # Aliased: attribute names are checked against DynamoDB's reserved words.
        sets = [f"#{name} = :{name}" for name in reported]
        removes = [f"#{name}" for name in ("progress", "events") if name not in reported]
        clauses = ([f"SET {', '.join(sets)}"] if sets else []) + (
            [f"REMOVE {', '.join(removes)}"] if removes else []
        )
        values |= {f":{name}": value for name, value in reported.items()}
        names = {"#progress": "progress", "#events": "events"}
        out = self._update(task.id, " ".join(clauses), condition, values, names, returns="NONE")
        return out is not None

    def get_many(self, task_ids: Sequence[str]) -> dict[str, Task]:
        ids = [i for i in dict.fromkeys(task_ids) if not i.startswith(NOT_TASKS)]
        found: dict[str, Task] = {}
        for start in range(0, len(ids), GET_MANY_BATCH):
            items = _batch_get(self.client, self.table, ids[start : start + GET_MANY_BATCH])
            tasks = readable_tasks([i for i in items if i.get("kind", {}).get("S") == "task"])
            found |= {t.id: t for t in tasks}
        return found


class DynamoWorkerRegistry:
    """Worker records as ``worker#<id>`` items (kind ``worker``) of the task table, with a
    TTL (``expires_at``) and the string set ``cancel`` of task ids to cancel."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self.client = client
        self.table = table

    def heartbeat(self, info: WorkerInfo, ttl_seconds: int) -> set[str]:
        with translated("dynamodb UpdateItem"):
            out = self.client.update_item(
                TableName=self.table,
                Key={"id": _s("worker#" + info.id)},
                UpdateExpression=(
                    "SET kind = :k, fleet = :k, host = :h, pid = :p, started_at = :st, "
                    "last_heartbeat = :lh, in_flight = :if, concurrency = :c, version = :v, expires_at = :exp"
                ),
                ExpressionAttributeValues={
                    ":k": _s("worker"),
                    ":h": _s(info.host),
                    ":p": _n(info.pid),
                    ":st": _ts(info.started_at),
                    ":lh": _ts(info.last_heartbeat),
                    ":if": _n(info.in_flight),
                    ":c": _n(info.concurrency),
                    ":v": _s(info.version),
                    ":exp": _n(_epoch(info.last_heartbeat) + ttl_seconds),
                },
                ReturnValues="ALL_NEW",
            )
        cancel = set(out["Attributes"].get("cancel", {}).get("SS", []))
        if cancel:
            with translated("dynamodb UpdateItem"):
                self.client.update_item(
                    TableName=self.table,
                    Key={"id": _s("worker#" + info.id)},
                    UpdateExpression="DELETE cancel :ids",
                    ExpressionAttributeValues={":ids": {"SS": sorted(cancel)}},
                )
        return cancel

    def remove_worker(self, worker_id: str) -> None:
        with translated("dynamodb DeleteItem"):
            self.client.delete_item(TableName=self.table, Key={"id": _s("worker#" + worker_id)})

    @staticmethod
    def _worker(item: dict[str, Any]) -> WorkerInfo:
        return WorkerInfo(
            id=item["id"]["S"].removeprefix("worker#"),
            host=item["host"]["S"],
            pid=int(item["pid"]["N"]),
            started_at=from_rfc3339(item["started_at"]["S"]),  # type: ignore[arg-type]
            last_heartbeat=from_rfc3339(item["last_heartbeat"]["S"]),  # type: ignore[arg-type]
            in_flight=int(item["in_flight"]["N"]),
            concurrency=int(item["concurrency"]["N"]),
            version=item["version"]["S"],
        )

    def workers(self) -> list[WorkerInfo]:
        ids: list[str] = []
        args: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "fleet-index",
            "KeyConditionExpression": "fleet = :k",
            "ExpressionAttributeValues": {":k": _s("worker")},
        }
        while True:
            with translated("dynamodb Query"):
                out = self.client.query(**args)
            ids += [i["id"]["S"] for i in out.get("Items", [])]
            if "LastEvaluatedKey" not in out:
                break
            args["ExclusiveStartKey"] = out["LastEvaluatedKey"]
        # Keys only in the index: the items, from the table (one that expired is gone).
        return [self._worker(i) for i in _batch_get(self.client, self.table, ids) if "host" in i]

    def worker(self, worker_id: str) -> WorkerInfo | None:
        with translated("dynamodb GetItem"):
            item = self.client.get_item(
                TableName=self.table, Key={"id": _s("worker#" + worker_id)}, ConsistentRead=True
            ).get("Item")
        return self._worker(item) if item else None

    def request_cancel(self, worker_id: str, task_id: str) -> None:
        # The worker reads this set with its heartbeat: one write per worker beat, rather
        # than one read per running task. No record, no worker to tell: the condition.
        try:
            with translated("dynamodb UpdateItem"):
                self.client.update_item(
                    TableName=self.table,
                    Key={"id": _s("worker#" + worker_id)},
                    UpdateExpression="ADD cancel :ids",
                    ConditionExpression="attribute_exists(id)",
                    ExpressionAttributeValues={":ids": {"SS": [task_id]}},
                )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
