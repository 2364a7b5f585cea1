"""The ports the engine talks to. Adapters live beside them (``conveyor.aws`` for AWS,
``conveyor.memory`` for tests and embedding); one contract suite runs against each."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from conveyor.model import (
    Delivery,
    Message,
    NotifyState,
    Progress,
    QueueDepth,
    Status,
    Task,
    TaskCopy,
    TaskError,
    TaskEvent,
    Waiting,
    WorkerInfo,
)


@dataclass(frozen=True)
class Page:
    items: list[Task]
    next_cursor: str | None


@dataclass(frozen=True)
class Claim:
    """What a claim attempt found: ``task`` is set when this worker now owns the attempt;
    otherwise ``current`` is the record as it stands (None if it does not exist)."""

    task: Task | None
    current: Task | None


@dataclass(frozen=True)
class ScheduleState:
    """What the store keeps per schedule (``key`` is ``namespace/name``): the newest slot
    handled (fired or skipped), and the last task the schedule started and when."""

    key: str
    last_slot: datetime | None = None
    last_task_id: str | None = None
    last_run_at: datetime | None = None


@dataclass(frozen=True)
class UniqueLock:
    """The lock a create takes with its task (``TaskStore.create``): one item per (type,
    key) naming the task that holds it, written in the same step as the task. It is free
    when absent or when it names ``take_from``, a holder the caller found no longer
    active; with ``cancel``, that holder is cancelled in the same step, if still queued
    (``notify``: its webhook is owed, as ``cancel`` would mark it)."""

    id: str
    expires_at: int  # epoch seconds: the item goes (TTL) once no holder can still be active
    take_from: str | None = None
    cancel: bool = False
    notify: bool = False


def unique_lock_id(task_type: str, key_digest: str) -> str:
    return f"unique#{task_type}#{key_digest}"


# A task's record is one DynamoDB item, which holds at most this many bytes.
STORE_ITEM_BYTES = 400 * 1024


def same_creation(stored: Task, new: Task) -> bool:
    """Whether ``new`` is the task ``stored`` was created as: the fields a create writes
    and no transition changes (a retried create may find the task already claimed)."""
    fields = (
        "id",
        "type",
        "payload",
        "created_at",
        "max_attempts",
        "idempotency_key",
        "submitter_scopes",
        "notify_url",
        "submitter",
        "priority",
        "unique_key",
    )
    return all(getattr(stored, f) == getattr(new, f) for f in fields)


class TaskStore(Protocol):
    def create(
        self, task: Task, body_hash: str | None = None, lock: UniqueLock | None = None
    ) -> tuple[Task, bool]:
        """Write a new record. With ``task.idempotency_key`` set, a second create with the
        same key returns (existing task, False), or raises IdempotencyConflict if
        ``body_hash`` differs; that check comes first.

        With ``lock``, the task is written only together with the lock: if another task
        (not ``take_from``) holds it, nothing is written and Duplicate names the holder;
        also when ``cancel`` finds ``take_from`` no longer queued.

        A create of an id that exists is the retry of a write that took effect (its answer
        was lost): with the same content it returns (stored task, True); with different
        content it raises Conflict."""

    def create_many(self, tasks: Sequence[Task]) -> None: ...

    def get(self, task_id: str, consistent: bool = False) -> Task | None: ...

    def query(
        self,
        status: Status | None = None,
        task_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page: ...

    def count_by_status(self) -> dict[Status, int]: ...

    def oldest_queued(self) -> Task | None: ...

    def queued_before(self, before: datetime, limit: int = 100) -> list[Task]: ...

    def mark_redispatched(self, task: Task, at: datetime) -> bool:
        """Move ``updated_at`` on if the task is still ``queued`` as ``task`` saw it: of
        several callers holding the same copy, exactly one gets True (and sends)."""
        ...

    def claim(
        self, task_id: str, task_type: str, worker_id: str, at: datetime, copy: TaskCopy | None = None
    ) -> Claim:
        """Queued and due (and of ``task_type``) -> running under ``worker_id``, one more
        attempt. ``copy``: the message's copy of the task as created; the claim may rest on
        it (nothing read back) only where the record provably is that copy, never started."""

    def take_over(self, task: Task, worker_id: str, at: datetime) -> Task | None: ...

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
        """Move the attempt ``task`` (as claimed) to a terminal state; None if it lost it.
        The record expires ``retention_seconds`` (default: the store's) after ``at``.
        With ``notify``, the same write marks its completion webhook ``pending``."""

    def record_delivery(self, task: Task, delivery: Delivery, state: NotifyState) -> Task | None:
        """Append ``delivery`` to the finished task's log (keeping the newest
        MAX_DELIVERIES) and set its notify state, if the record still holds the log and
        finish time that ``task`` has: of two workers delivering the same notification,
        one records and the other gets None."""

    def requeue(self, task: Task, run_at: datetime, error: TaskError, at: datetime) -> bool: ...

    def set_waiting(self, task_id: str, waiting: Waiting | None, at: datetime) -> bool:
        """Record why a queued task has not started (None: clear it), if it is still
        ``queued``; False when it is not. The claim clears it too."""

    def cancel(self, task_id: str, at: datetime, notify: bool = False) -> Task:
        """Cancel a queued task, or flag a running one ``cancel_requested``. The store does
        not tell the worker: the caller passes a running task's id on with
        ``WorkerRegistry.request_cancel`` (``Engine.cancel`` does).

        A queued task cancelled has its webhook marked ``pending`` in the same write when
        ``notify`` (its type names a webhook) or the record names its own URL; so does
        ``fail_unfinished``."""

    def retry(self, task_id: str, at: datetime, lock: UniqueLock | None = None) -> Task:
        """Queue a failed or cancelled task again. With ``lock`` (its unique key), only
        together with taking the lock, as ``create`` takes it (Duplicate names a holder)."""
        ...

    def fail_unfinished(
        self, task_id: str, error: TaskError, at: datetime, notify: bool = False
    ) -> Task | None: ...

    def schedule_state(self, key: str) -> ScheduleState | None: ...

    def advance_schedule(
        self, key: str, slot: datetime, task_id: str | None = None, run_at: datetime | None = None
    ) -> bool:
        """Move the schedule's last slot to ``slot`` if that is later than the stored one
        (a conditional write: the state only moves forward); with ``task_id``, record it as
        the last task, started at ``run_at``. False when the state was already at or past
        ``slot``. Never listed or counted as a task."""

    def record_schedule_task(self, key: str, task_id: str, run_at: datetime) -> None:
        """Record a task started outside the slots (a manual trigger) as the last task."""

    def ping(self) -> None: ...

    # -- live progress (handlers report it; the API's watcher reads it) -----------------

    def record_progress(self, task: Task, progress: Progress | None, events: Sequence[TaskEvent]) -> bool:
        """Set the attempt ``task``'s (as claimed) latest progress and its kept events (the
        whole list, already trimmed), only while that attempt still owns the task; False
        when it does not (a stale worker writes nothing). Moves no other field."""
        ...

    def get_many(self, task_ids: Sequence[str]) -> dict[str, Task]:
        """The tasks of ``task_ids`` that exist, by id, read in batches (BatchGetItem: 100
        ids a call), eventually consistent: one call serves every watcher of these ids."""
        ...


# Most ids one batched read (DynamoDB BatchGetItem) takes.
GET_MANY_BATCH = 100


class WorkerRegistry(Protocol):
    """The live workers, each one record refreshed by its heartbeat (on DynamoDB: the
    ``worker#<id>`` items of the task table), and the cancel requests addressed to them.

    A cancel of a running task reaches its worker through here: ``request_cancel`` adds
    the id to the worker's record and the worker's next ``heartbeat`` returns (and clears)
    it, so each worker beat costs one write rather than one read per running task."""

    def heartbeat(self, info: WorkerInfo, ttl_seconds: int) -> set[str]:
        """Record the worker as alive for ``ttl_seconds``; returns (and clears) the ids of
        tasks whose cancel was requested since its last beat."""

    def request_cancel(self, worker_id: str, task_id: str) -> None:
        """Ask the worker to cancel ``task_id`` at its next heartbeat; nothing when the
        worker has no record (it is gone, and its tasks are taken over)."""

    def remove_worker(self, worker_id: str) -> None: ...

    def workers(self) -> list[WorkerInfo]: ...

    def worker(self, worker_id: str) -> WorkerInfo | None: ...


# A broker delays a message at most this long (SQS's DelaySeconds ceiling); a task due later
# is re-hidden by the worker until its run_at.
BROKER_MAX_DELAY_SECONDS = 900
# ... and hides a received message at most this long (SQS: 12 h since receipt, less a margin).
BROKER_MAX_VISIBILITY_SECONDS = 12 * 3600 - 300


# A message to send: (task id, type, delay seconds, the task as created to copy in, or None).
Outgoing = tuple[str, str, int, Task | None]


class Broker(Protocol):
    """One SQS queue: the task queue, or the dead-letter queue."""

    def send(
        self,
        task_id: str,
        task_type: str,
        delay_seconds: int = 0,
        trace_context: Mapping[str, str] | None = None,
        task: Task | None = None,
    ) -> None:
        """``trace_context`` comes back as the received Message's ``trace_context``;
        ``task`` (as created) as its ``copy`` when small enough (``encode_message``)."""

    def send_many(
        self, items: Sequence[Outgoing], trace_context: Mapping[str, str] | None = None
    ) -> list[str]:
        """Send (id, type, delay, task as created or None) items, all with ``trace_context``;
        returns ids that could not be sent."""

    def receive(self, max_messages: int, wait_seconds: int) -> list[Message]: ...

    def delete_many(self, receipts: Iterable[str]) -> None: ...

    def change_visibility(self, receipt: str, seconds: int) -> None: ...

    def change_visibility_many(self, items: Sequence[tuple[str, int]]) -> None: ...

    def depth(self) -> QueueDepth: ...

    def ping(self) -> None: ...


@dataclass(frozen=True)
class BlobInfo:
    size: int
    metadata: dict[str, str]


class BlobStore(Protocol):
    """Object storage for handlers that read or write files (S3)."""

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        overwrite: bool = True,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Write an object; raises NotFound when the bucket does not exist, and Conflict
        when ``overwrite`` is false and the key exists (checked by the store, atomically)."""

    def upload(
        self,
        key: str,
        chunks: Iterable[bytes],
        content_type: str = "application/octet-stream",
        *,
        overwrite: bool = True,
        metadata: dict[str, str] | None = None,
        part_size: int = ...,
    ) -> int:
        """Write an object from a stream, one part in memory at a time; as ``put``.
        Returns the bytes written."""

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """Read an object (at most ``max_bytes + 1`` bytes of it when given); raises
        NotFound when it (or its bucket) does not exist."""

    def stat(self, key: str) -> BlobInfo | None:
        """Size and metadata of an object; None when it does not exist."""

    def exists(self, key: str) -> bool: ...


# -- fleet-wide flow control (docs/TASKTYPES.md) ------------------------------------------


@dataclass(frozen=True)
class SlotAnswer:
    """What a concurrency acquire found: ``granted`` when the task now holds a slot;
    ``in_use`` is how many live holders the limit has (this one included when granted)."""

    granted: bool
    in_use: int


@dataclass(frozen=True)
class Lease:
    """A slot a task holds: the limit's (type, key) and the task's id."""

    task_type: str
    key: str
    task_id: str


class FlowLimits(Protocol):
    """Fleet-wide concurrency leases and rate-limit reservations, shared by every worker
    (on DynamoDB: ``limit#`` and ``rate#`` items of the task table).

    A slot is held by a task id for a worker until ``lease_until``; the worker's heartbeat
    renews it, and a slot whose lease has passed is free for the next acquire, so a
    killed worker's slots come back within one lease."""

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
        """Take a slot of the (type, key) limit for ``task_id`` if fewer than
        ``max_slots`` live leases are held (a lease already held by this worker for the
        task is renewed). Refused while another worker holds a live lease for the task."""

    def renew_slots(self, leases: Sequence[Lease], worker_id: str, lease_until: datetime) -> list[Lease]:
        """Move the leases this worker holds to ``lease_until``; returns those it no longer
        holds (expired and taken, or released)."""

    def release_slot(self, lease: Lease, worker_id: str) -> None:
        """Give the slot back, if this worker still holds it (never another's)."""

    def slots_in_use(self, task_type: str, key: str, now: datetime) -> int:
        """How many live leases the (type, key) limit holds."""

    def reserve_rate(
        self, task_type: str, key: str, interval: float, capacity: int, now: datetime
    ) -> datetime:
        """Reserve the next start of the (type, key) rate limit (GCRA: one start every
        ``interval`` seconds, ``capacity`` at once): the time this start may happen, ``now``
        when a token is free. Every call reserves one start."""
