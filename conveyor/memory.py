"""In-process adapters: a TaskStore, a WorkerRegistry, a Broker and a BlobStore in memory.

They follow the same contract as the AWS adapters (tests/contract/ runs one suite against
both), so they serve for embedding Conveyor in a single process and for fast tests of
code above the ports. They keep nothing across restarts: never a production backend.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from conveyor import jsonsafe
from conveyor.clock import SYSTEM, Clock
from conveyor.errors import (
    Conflict,
    Duplicate,
    IdempotencyConflict,
    InvalidCursor,
    NotFound,
    RecordTooLarge,
)
from conveyor.lifecycle.flow import epoch_ms, from_epoch_ms, gcra, interval_ms
from conveyor.model import (
    MAX_DELIVERIES,
    Delivery,
    Message,
    NotifyState,
    Priority,
    Progress,
    QueueDepth,
    Status,
    Task,
    TaskCopy,
    TaskError,
    TaskEvent,
    Waiting,
    WorkerInfo,
    decode_message,
    encode_message,
    is_task_id,
)
from conveyor.ports import (
    BROKER_MAX_DELAY_SECONDS,
    STORE_ITEM_BYTES,
    BlobInfo,
    Claim,
    Lease,
    Outgoing,
    Page,
    ScheduleState,
    SlotAnswer,
    UniqueLock,
    same_creation,
)

if TYPE_CHECKING:
    from conveyor.ports import BlobStore, Broker, FlowLimits, TaskStore, WorkerRegistry


def _item_bytes(task: Task, result: Any, error: TaskError | None) -> int:
    """About what the task's DynamoDB item would take: its JSON-encoded payload and
    result and its error text, plus a few hundred bytes for the other attributes."""
    size = 512
    for value in (task.payload, result):
        # Not storable at all counts nothing: the caller checks results before this.
        with contextlib.suppress(TypeError, ValueError, UnicodeEncodeError, RecursionError):
            size += len(jsonsafe.dumps(value).encode())
    if error is not None:
        size += len(error.type.encode()) + len(error.message.encode())
    return size


def _owed(current: Task, notify: bool) -> NotifyState | None:
    """The webhook state a finish outside the worker's attempt writes (TaskStore.cancel)."""
    return NotifyState.PENDING if notify or current.notify_url else None


class MemoryTaskStore:
    """Tasks and schedule states. A finished record whose ``expires_at`` has passed on
    ``clock`` is gone, as DynamoDB's TTL removes it (there, some time after)."""

    def __init__(self, retention_seconds: int = 7 * 24 * 3600, clock: Clock = SYSTEM) -> None:
        self.retention = retention_seconds
        self.clock = clock
        self._tasks: dict[str, Task] = {}
        self._idem: dict[str, tuple[str, str]] = {}
        self._unique: dict[str, str] = {}  # unique lock id -> the task holding it
        self._next_expiry: float = math.inf
        self._schedules: dict[str, ScheduleState] = {}
        self._lock = threading.RLock()  # every method is one atomic step, as in DynamoDB

    def create(
        self, task: Task, body_hash: str | None = None, lock: UniqueLock | None = None
    ) -> tuple[Task, bool]:
        with self._lock:
            self._expire()
            key = task.idempotency_key
            if key and key in self._idem:
                task_id, stored_hash = self._idem[key]
                if stored_hash != (body_hash or ""):
                    raise IdempotencyConflict(
                        "Idempotency-Key was already used with a different request body"
                    )
                return self._tasks[task_id], False
            existing = self._tasks.get(task.id)
            if existing is not None:
                if same_creation(existing, task):
                    return existing, True  # the retry of a create that took effect
                raise Conflict(f"task {task.id} exists")
            if lock is not None:
                self._take(lock, task.created_at, task.id)
                self._unique[lock.id] = task.id
            self._put(task)
            if key:
                self._idem[key] = (task.id, body_hash or "")
            return task, True

    def _take(self, lock: UniqueLock, at: datetime, taker: str) -> None:
        """Check that ``lock`` is free for ``taker`` to take, and cancel its holder (as of
        ``at``) if asked; under the lock."""
        holder = self._unique.get(lock.id)
        if holder is not None and holder not in (lock.take_from, taker):
            raise Duplicate("the unique key is held by another task", holder)
        if lock.cancel and lock.take_from is not None:
            current = self._tasks.get(lock.take_from)
            if current is None or current.status is not Status.QUEUED:
                raise Duplicate("the task holding the unique key is no longer queued", lock.take_from)
            self._put(self._cancelled(current, at, lock.notify))

    def _cancelled(self, current: Task, at: datetime, notify: bool) -> Task:
        return replace(
            current,
            status=Status.CANCELLED,
            finished_at=at,
            updated_at=at,
            notify_state=_owed(current, notify),
            expires_at=int(at.timestamp()) + self.retention,
            waiting=None,
        )

    def create_many(self, tasks: Sequence[Task]) -> None:
        with self._lock:
            for task in tasks:
                self._put(task)

    def _put(self, task: Task) -> None:
        """Store a record; called under the lock."""
        self._tasks[task.id] = task
        if task.expires_at is not None and task.expires_at < self._next_expiry:
            self._next_expiry = task.expires_at

    def _expire(self) -> None:
        """Drop the records past their ``expires_at`` (the TTL); called under the lock.
        Nothing to look through until the earliest expiry comes (a lower bound)."""
        horizon = self.clock.now().timestamp()
        if horizon <= self._next_expiry:
            return
        gone = [i for i, t in self._tasks.items() if t.expires_at is not None and t.expires_at < horizon]
        for task_id in gone:
            del self._tasks[task_id]
        # An idempotency key lasts no longer than its task (on DynamoDB: its retention
        # from creation), so a key of a task that is gone may be used again.
        self._idem = {k: v for k, v in self._idem.items() if v[0] in self._tasks}
        # A lock whose holder is gone is free anyway (its item's TTL removes it on DynamoDB).
        self._unique = {k: v for k, v in self._unique.items() if v in self._tasks}
        left = (t.expires_at for t in self._tasks.values() if t.expires_at is not None)
        self._next_expiry = min(left, default=math.inf)

    def get(self, task_id: str, consistent: bool = False) -> Task | None:
        with self._lock:
            self._expire()
            return self._tasks.get(task_id)

    def query(
        self,
        status: Status | None = None,
        task_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        after = None
        if cursor:
            try:
                after = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidCursor from exc
            if not is_task_id(after):
                raise InvalidCursor
        with self._lock:
            self._expire()
            found = sorted(
                (
                    t
                    for t in self._tasks.values()
                    if (status is None or t.status is status) and (task_type is None or t.type == task_type)
                ),
                key=lambda t: t.id,
                reverse=True,
            )
        if after is not None:
            found = [t for t in found if t.id < after]
        page = found[:limit]
        more = len(found) > limit
        next_cursor = base64.urlsafe_b64encode(page[-1].id.encode()).decode().rstrip("=") if more else None
        return Page(page, next_cursor)

    def count_by_status(self) -> dict[Status, int]:
        with self._lock:
            self._expire()
            counts = dict.fromkeys(Status, 0)
            for t in self._tasks.values():
                counts[t.status] += 1
            return counts

    def _queued(self) -> list[Task]:
        with self._lock:
            return sorted((t for t in self._tasks.values() if t.status is Status.QUEUED), key=lambda t: t.id)

    def oldest_queued(self) -> Task | None:
        queued = self._queued()
        return queued[0] if queued else None

    def queued_before(self, before: datetime, limit: int = 100) -> list[Task]:
        return [t for t in self._queued() if t.created_at < before][:limit]

    def _swap(self, task_id: str, expect: Any, **changes: Any) -> Task | None:
        """Apply ``changes`` if ``expect(current)`` holds: the conditional update."""
        with self._lock:
            current = self._tasks.get(task_id)
            if current is None or not expect(current):
                return None
            updated = replace(current, **changes)
            self._put(updated)
            return updated

    def mark_redispatched(self, task: Task, at: datetime) -> bool:
        # Strictly later than the copy's stamp, or a second caller holding the same copy in
        # the same millisecond would pass the condition too.
        stamp = max(at, task.updated_at + timedelta(milliseconds=1))
        return (
            self._swap(
                task.id,
                lambda t: t.status is Status.QUEUED and t.updated_at == task.updated_at,
                updated_at=stamp,
            )
            is not None
        )

    def claim(
        self, task_id: str, task_type: str, worker_id: str, at: datetime, copy: TaskCopy | None = None
    ) -> Claim:
        # ``copy`` only spares a DynamoDB read; the record here is at hand.
        with self._lock:
            current = self._tasks.get(task_id)
            claimed = self._swap(
                task_id,
                lambda t: (
                    t.status is Status.QUEUED and t.type == task_type and (t.run_at is None or t.run_at <= at)
                ),
                status=Status.RUNNING,
                attempts=(current.attempts + 1) if current else 0,
                started_at=at,
                updated_at=at,
                worker=worker_id,
                cancel_requested=False,
                waiting=None,
            )
            return Claim(claimed, None) if claimed else Claim(None, self._tasks.get(task_id))

    def take_over(self, task: Task, worker_id: str, at: datetime) -> Task | None:
        return self._swap(
            task.id,
            lambda t: t.status is Status.RUNNING and t.worker == task.worker and t.attempts == task.attempts,
            attempts=task.attempts + 1,
            started_at=at,
            updated_at=at,
            worker=worker_id,
        )

    def _owned(self, task: Task) -> Any:
        return lambda t: (
            t.status is Status.RUNNING and t.worker == task.worker and t.attempts == task.attempts
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
        size = _item_bytes(task, result, error)
        if size > STORE_ITEM_BYTES:
            # As DynamoDB refuses the whole update, so that callers meet the same failure here.
            raise RecordTooLarge(f"the finished record would be {size} bytes; items hold {STORE_ITEM_BYTES}")
        return self._swap(
            task.id,
            self._owned(task),
            status=status,
            finished_at=at,
            updated_at=at,
            result=result,
            error=error,
            expires_at=int(at.timestamp()) + (retention_seconds or self.retention),
            notify_state=NotifyState.PENDING if notify else None,
        )

    def record_delivery(self, task: Task, delivery: Delivery, state: NotifyState) -> Task | None:
        return self._swap(
            task.id,
            lambda t: t.deliveries == task.deliveries and t.finished_at == task.finished_at,
            deliveries=(*task.deliveries, delivery)[-MAX_DELIVERIES:],
            notify_state=state,
        )

    def set_waiting(self, task_id: str, waiting: Waiting | None, at: datetime) -> bool:
        return (
            self._swap(task_id, lambda t: t.status is Status.QUEUED, waiting=waiting, updated_at=at)
            is not None
        )

    def requeue(self, task: Task, run_at: datetime, error: TaskError, at: datetime) -> bool:
        return (
            self._swap(
                task.id,
                self._owned(task),
                status=Status.QUEUED,
                run_at=run_at,
                updated_at=at,
                error=error,
                cancel_requested=False,
            )
            is not None
        )

    def cancel(self, task_id: str, at: datetime, notify: bool = False) -> Task:
        with self._lock:
            current = self._tasks.get(task_id)
            if current is None:
                raise NotFound(task_id)
            if current.status.terminal:
                raise Conflict(
                    f"task is {current.status.value}; only queued or running tasks can be cancelled"
                )
            if current.status is Status.QUEUED:
                done = self._cancelled(current, at, notify)
            else:
                done = replace(current, cancel_requested=True, updated_at=at)
            self._put(done)
            return done

    def retry(self, task_id: str, at: datetime, lock: UniqueLock | None = None) -> Task:
        with self._lock:
            current = self._tasks.get(task_id)
            if current is None:
                raise NotFound(task_id)
            if current.status not in (Status.FAILED, Status.CANCELLED):
                raise Conflict(
                    f"task is {current.status.value}; only failed or cancelled tasks can be retried"
                )
            if lock is not None:
                self._take(lock, at, task_id)
                self._unique[lock.id] = task_id
            again = replace(
                current,
                status=Status.QUEUED,
                attempts=0,
                updated_at=at,
                started_at=None,
                finished_at=None,
                run_at=None,
                error=None,
                result=None,
                worker=None,
                expires_at=None,
                cancel_requested=False,
                progress=None,  # a new run starts from nothing; its events stay as history
                notify_state=None,
            )
            self._put(again)
            return again

    def fail_unfinished(
        self, task_id: str, error: TaskError, at: datetime, notify: bool = False
    ) -> Task | None:
        with self._lock:
            current = self._tasks.get(task_id)
            if current is None or current.status.terminal:
                return None
            failed = replace(
                current,
                status=Status.FAILED,
                error=error,
                finished_at=at,
                updated_at=at,
                expires_at=int(at.timestamp()) + self.retention,
                notify_state=_owed(current, notify),
            )
            self._put(failed)
            return failed

    def schedule_state(self, key: str) -> ScheduleState | None:
        return self._schedules.get(key)

    def advance_schedule(
        self, key: str, slot: datetime, task_id: str | None = None, run_at: datetime | None = None
    ) -> bool:
        with self._lock:
            current = self._schedules.get(key) or ScheduleState(key)
            if current.last_slot is not None and current.last_slot >= slot:
                return False
            changes: dict[str, Any] = {"last_slot": slot}
            if task_id is not None:
                changes |= {"last_task_id": task_id, "last_run_at": run_at or slot}
            self._schedules[key] = replace(current, **changes)
            return True

    def record_schedule_task(self, key: str, task_id: str, run_at: datetime) -> None:
        with self._lock:
            current = self._schedules.get(key) or ScheduleState(key)
            self._schedules[key] = replace(current, last_task_id=task_id, last_run_at=run_at)

    def ping(self) -> None:
        return None

    def record_progress(self, task: Task, progress: Progress | None, events: Sequence[TaskEvent]) -> bool:
        return self._swap(task.id, self._owned(task), progress=progress, events=tuple(events)) is not None

    def get_many(self, task_ids: Sequence[str]) -> dict[str, Task]:
        with self._lock:
            return {i: self._tasks[i] for i in task_ids if i in self._tasks}


class MemoryWorkerRegistry:
    """Worker records with their TTL on ``clock``: a record not refreshed within its
    ``ttl_seconds`` is gone, as DynamoDB's TTL removes it (there, some time after)."""

    def __init__(self, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        self._cancel: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def _live(self, worker_id: str) -> WorkerInfo | None:
        """The worker's record unless expired (dropped then, with its requests); under the lock."""
        found = self._workers.get(worker_id)
        if found is None:
            return None
        if found[1] < self.clock.now().timestamp():
            del self._workers[worker_id]
            self._cancel.pop(worker_id, None)
            return None
        return found[0]

    def heartbeat(self, info: WorkerInfo, ttl_seconds: int) -> set[str]:
        with self._lock:
            self._live(info.id)  # an expired record's requests went with it
            self._workers[info.id] = (info, info.last_heartbeat.timestamp() + ttl_seconds)
            return self._cancel.pop(info.id, set())

    def request_cancel(self, worker_id: str, task_id: str) -> None:
        with self._lock:
            if self._live(worker_id) is not None:
                self._cancel.setdefault(worker_id, set()).add(task_id)

    def remove_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)
            self._cancel.pop(worker_id, None)

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            return [w for w in (self._live(i) for i in list(self._workers)) if w is not None]

    def worker(self, worker_id: str) -> WorkerInfo | None:
        with self._lock:
            return self._live(worker_id)


class MemoryBlobStore:
    """Objects in memory, with S3's answers (conveyor/aws/s3.py): NotFound for a missing
    key or bucket, Conflict for ``overwrite=False`` on an existing key, ranged reads.
    Stores over the same ``buckets`` share them, as clients of one S3 do; ``bucket``
    must be one of them (the default: a fresh store with that one bucket)."""

    def __init__(self, bucket: str = "conveyor", buckets: dict[str, dict[str, _Blob]] | None = None) -> None:
        self.bucket = bucket
        self.buckets: dict[str, dict[str, _Blob]] = {bucket: {}} if buckets is None else buckets
        self._lock = threading.Lock()

    def for_bucket(self, bucket: str) -> MemoryBlobStore:
        """A store of another bucket over the same objects (NotFound unless it exists)."""
        other = MemoryBlobStore(bucket, self.buckets)
        other._lock = self._lock
        return other

    def _objects(self) -> dict[str, _Blob]:
        objects = self.buckets.get(self.bucket)
        if objects is None:
            raise NotFound(f"memory://{self.bucket}")
        return objects

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        overwrite: bool = True,
        metadata: dict[str, str] | None = None,
    ) -> None:
        with self._lock:
            objects = self._objects()
            if not overwrite and key in objects:
                raise Conflict(f"memory://{self.bucket}/{key} exists")
            # User metadata names are case-insensitive, as S3's x-amz-meta-* headers.
            meta = {k.lower(): v for k, v in (metadata or {}).items()}
            objects[key] = _Blob(bytes(data), content_type, meta)

    def upload(
        self,
        key: str,
        chunks: Iterable[bytes],
        content_type: str = "application/octet-stream",
        *,
        overwrite: bool = True,
        metadata: dict[str, str] | None = None,
        part_size: int = 8 * 1024 * 1024,
    ) -> int:
        """As S3's multipart upload: the object appears whole at the end, and
        ``overwrite=False`` is checked then (an existing key refuses it)."""
        with self._lock:
            self._objects()  # a missing bucket refuses it before any part is read
        data = b"".join(chunks)
        self.put(key, data, content_type, overwrite=overwrite, metadata=metadata)
        return len(data)

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        with self._lock:
            blob = self._objects().get(key)
        if blob is None:
            raise NotFound(f"memory://{self.bucket}/{key}")
        return blob.data if max_bytes is None else blob.data[: max_bytes + 1]

    def stat(self, key: str) -> BlobInfo | None:
        with self._lock:
            blob = self.buckets.get(self.bucket, {}).get(key)
        return None if blob is None else BlobInfo(size=len(blob.data), metadata=dict(blob.metadata))

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None


@dataclass(frozen=True)
class _Blob:
    data: bytes
    content_type: str
    metadata: dict[str, str]


@dataclass
class _Entry:
    task_id: str
    task_type: str
    sent_at: datetime
    visible_at: float
    receives: int = 0
    receipt: str = ""
    trace_context: dict[str, str] = field(default_factory=dict)
    body: str = ""  # as SQS would carry it: decoded again on each receive


class MemoryBroker:
    """A queue with SQS's visibility semantics (delay, receive hides, change visibility).

    Visibility runs on ``clock``: with a FakeClock, a hidden or delayed message comes back
    when the test advances the clock, not after a real wait. A long poll waits in real
    time, woken by a send, a visibility change or a clock jump."""

    def __init__(
        self, visibility_timeout: float = 30.0, *, clock: Clock = SYSTEM, lane: Priority = Priority.NORMAL
    ) -> None:
        self.visibility_timeout = visibility_timeout
        self.clock = clock
        self.lane = lane
        # Receipts name the queue, as SQS's do: one used on the wrong queue matches nothing.
        self._prefix = "r" if lane is Priority.NORMAL else f"{lane.value}-r"
        self._entries: list[_Entry] = []
        self._receipts = itertools.count()
        self._cond = threading.Condition()
        clock.on_jump(self._wake)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def send(
        self,
        task_id: str,
        task_type: str,
        delay_seconds: int = 0,
        trace_context: Mapping[str, str] | None = None,
        task: Task | None = None,
    ) -> None:
        self.send_many([(task_id, task_type, delay_seconds, task)], trace_context)

    def send_many(
        self, items: Sequence[Outgoing], trace_context: Mapping[str, str] | None = None
    ) -> list[str]:
        at, sent = self.clock.monotonic(), self.clock.now()
        with self._cond:
            for task_id, task_type, delay, task in items:
                delay = min(max(delay, 0), BROKER_MAX_DELAY_SECONDS)
                body = encode_message(task_id, task_type, task)
                context = dict(trace_context or {})
                self._entries.append(_Entry(task_id, task_type, sent, at + delay, 0, "", context, body))
            self._cond.notify_all()
        return []

    def receive(self, max_messages: int, wait_seconds: int) -> list[Message]:
        deadline = time.monotonic() + wait_seconds  # a long poll lasts real time
        with self._cond:
            while True:
                at = self.clock.monotonic()
                ready = [e for e in self._entries if e.visible_at <= at][: max(1, min(10, max_messages))]
                left = deadline - time.monotonic()
                if ready or left <= 0:
                    break
                waits = [e.visible_at - at for e in self._entries if e.visible_at > at]
                self._cond.wait(min([left, *waits]))
            out = []
            for e in ready:
                e.receives += 1
                e.receipt = f"{self._prefix}{next(self._receipts)}"
                e.visible_at = at + self.visibility_timeout
                out.append(
                    Message(
                        e.task_id,
                        e.task_type,
                        e.receipt,
                        e.receives,
                        e.sent_at,
                        dict(e.trace_context),
                        lane=self.lane,
                        copy=decode_message(e.body)[2] if e.body else None,
                    )
                )
            self._cond.notify_all()  # a receive changes what join() and depth() see
            return out

    def join(self, timeout: float = 10.0) -> None:
        """Wait until every message sent has been deleted (all work done), without
        sleeping: woken by each delete. Raises TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._entries:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._entries)} message(s) still in the queue")
                self._cond.wait(left)

    def _find(self, receipt: str) -> _Entry | None:
        return next((e for e in self._entries if e.receipt == receipt), None)

    def delete_many(self, receipts: Iterable[str]) -> None:
        wanted = set(receipts)
        with self._cond:
            self._entries = [e for e in self._entries if e.receipt not in wanted]
            self._cond.notify_all()

    def change_visibility(self, receipt: str, seconds: int) -> None:
        self.change_visibility_many([(receipt, seconds)])

    def change_visibility_many(self, items: Sequence[tuple[str, int]]) -> None:
        with self._cond:
            for receipt, seconds in items:
                entry = self._find(receipt)
                if entry is not None:
                    entry.visible_at = self.clock.monotonic() + seconds
            self._cond.notify_all()

    def depth(self) -> QueueDepth:
        now = self.clock.monotonic()
        with self._cond:
            visible = sum(1 for e in self._entries if e.visible_at <= now)
            in_flight = sum(1 for e in self._entries if e.visible_at > now and e.receives > 0)
            delayed = sum(1 for e in self._entries if e.visible_at > now and e.receives == 0)
        return QueueDepth(visible, in_flight, delayed)

    def ping(self) -> None:
        return None


class MemoryFlowLimits:
    """Concurrency leases and rate reservations in memory, with the DynamoDB adapter's
    answers (conveyor/aws/limits.py); times come from the callers' ``now``."""

    def __init__(self) -> None:
        # (type, key) -> {task id: (worker id, lease expiry)}
        self._slots: dict[tuple[str, str], dict[str, tuple[str, datetime]]] = {}
        self._tat: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def _live(self, task_type: str, key: str, now: datetime) -> dict[str, tuple[str, datetime]]:
        """The limit's unexpired leases (the expired ones dropped); under the lock."""
        holders = {t: h for t, h in self._slots.get((task_type, key), {}).items() if h[1] > now}
        self._slots[(task_type, key)] = holders
        return holders

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
        with self._lock:
            holders = self._live(task_type, key, now)
            held = holders.get(task_id)
            if held is not None and held[0] != worker_id:
                return SlotAnswer(False, len(holders))
            if held is None and len(holders) >= max_slots:
                return SlotAnswer(False, len(holders))
            holders[task_id] = (worker_id, lease_until)
            return SlotAnswer(True, len(holders))

    def renew_slots(self, leases: Sequence[Lease], worker_id: str, lease_until: datetime) -> list[Lease]:
        lost = []
        with self._lock:
            for lease in leases:
                holders = self._slots.get((lease.task_type, lease.key), {})
                held = holders.get(lease.task_id)
                if held is None or held[0] != worker_id:
                    lost.append(lease)
                else:
                    holders[lease.task_id] = (worker_id, lease_until)
        return lost

    def release_slot(self, lease: Lease, worker_id: str) -> None:
        with self._lock:
            holders = self._slots.get((lease.task_type, lease.key), {})
            held = holders.get(lease.task_id)
            if held is not None and held[0] == worker_id:
                del holders[lease.task_id]

    def slots_in_use(self, task_type: str, key: str, now: datetime) -> int:
        with self._lock:
            return len(self._live(task_type, key, now))

    def reserve_rate(
        self, task_type: str, key: str, interval: float, capacity: int, now: datetime
    ) -> datetime:
        with self._lock:
            now_ms = epoch_ms(now)
            start, self._tat[(task_type, key)] = gcra(
                self._tat.get((task_type, key)), now_ms, interval_ms(interval), capacity
            )
        return from_epoch_ms(start)


if TYPE_CHECKING:
    # mypy checks here that each memory adapter satisfies its port, signature by signature.
    _store: TaskStore = MemoryTaskStore()
    _workers: WorkerRegistry = MemoryWorkerRegistry()
    _broker: Broker = MemoryBroker()
    _blobs: BlobStore = MemoryBlobStore()
    _limits: FlowLimits = MemoryFlowLimits()
