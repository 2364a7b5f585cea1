"""The task record, its states, and the small value types around it."""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ulid import ULID


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

# The task_type of a notify message: deliver the finished task's completion webhook. No
# TaskType can take this name (names are DNS labels).
NOTIFY_TYPE = "#notify"


class NotifyState(enum.StrEnum):
    """Where a finished task's completion webhook stands (docs/WEBHOOKS.md)."""

    PENDING = "pending"  # written with the finish; a notify message is (or will be) on the queue
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # every attempt failed: given up
    UNDELIVERABLE = "undeliverable"  # never tried or stopped at once: no secret, address refused


class Priority(enum.StrEnum):
    """Which queue a task waits in: workers poll the levels by weight (docs/TASKTYPES.md)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PRIORITIES = (Priority.HIGH, Priority.NORMAL, Priority.LOW)


class WaitReason(enum.StrEnum):
    """Why a due task has not started: a fleet-wide limit of its type holds it back."""

    CONCURRENCY = "concurrency"
    RATE = "rate"


@dataclass(frozen=True)
class Waiting:
    """A queued task held back by a flow-control limit, until about ``until``."""

    reason: WaitReason
    until: datetime

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason.value, "until": to_rfc3339(self.until)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Waiting:
        return cls(WaitReason(data["reason"]), from_rfc3339(data["until"]) or now())


def new_id() -> str:
    """A ULID: 26 characters, sorts by creation time (ms), unique without coordination."""
    return str(ULID())


def is_task_id(value: object) -> bool:
    """Whether ``value`` is a ULID as ``new_id`` writes it (canonical, upper case)."""
    if not isinstance(value, str) or len(value) != 26:
        return False
    try:
        return str(ULID.from_str(value)) == value
    except ValueError:
        return False


def now() -> datetime:
    """The current UTC time at millisecond precision: what the store keeps, so a record
    read back compares equal to the one written."""
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def to_rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_rfc3339(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class TaskError:
    type: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message}


# What a handler may report (worker/handlers/context.py): the record keeps the latest
# progress and the last MAX_EVENTS events, each event's data at most MAX_EVENT_BYTES of JSON,
# so reporting never grows a record toward DynamoDB's 400 KB item size.
MAX_EVENTS = 20
MAX_EVENT_BYTES = 1024
MAX_EVENT_NAME = 64
MAX_PROGRESS_MESSAGE = 256


@dataclass(frozen=True)
class Progress:
    """How far an attempt got: ``fraction`` from 0 to 1, an optional human message."""

    fraction: float
    message: str | None
    attempt: int
    at: datetime

    @staticmethod
    def checked(fraction: float, message: str | None, attempt: int, at: datetime) -> Progress:
        """A Progress from a handler's arguments; ValueError/TypeError name what is wrong."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise TypeError(f"progress fraction must be a number from 0 to 1, not {type(fraction).__name__}")
        if not 0.0 <= fraction <= 1.0:  # also refuses NaN
            raise ValueError(f"progress fraction must be from 0 to 1, not {fraction!r}")
        if message is not None:
            if not isinstance(message, str):
                raise TypeError(f"progress message must be a string, not {type(message).__name__}")
            if len(message) > MAX_PROGRESS_MESSAGE:  # human text: shortened rather than refused
                message = message[: MAX_PROGRESS_MESSAGE - 1] + "\u2026"
        return Progress(round(float(fraction), 4), message, attempt, at)

    def to_json(self) -> dict[str, Any]:
        return {
            "fraction": self.fraction,
            "message": self.message,
            "attempt": self.attempt,
            "at": to_rfc3339(self.at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(
            float(data["fraction"]),
            data.get("message"),
            int(data.get("attempt", 0)),
            from_rfc3339(data["at"]) or now(),
        )


@dataclass(frozen=True)
class TaskEvent:
    """A named event a handler reported; ``seq`` counts a task's events from 1."""

    seq: int
    name: str
    data: Any
    attempt: int
    at: datetime

    @staticmethod
    def checked(seq: int, name: str, data: Any, attempt: int, at: datetime) -> TaskEvent:
        if not isinstance(name, str) or not 0 < len(name) <= MAX_EVENT_NAME:
            raise ValueError(f"event name must be a string of 1 to {MAX_EVENT_NAME} characters")
        try:
            size = len(json.dumps(data, allow_nan=False, separators=(",", ":")).encode())
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(f"event data must be JSON-serialisable: {exc}") from exc
        if size > MAX_EVENT_BYTES:
            raise ValueError(f"event data is {size} bytes of JSON; at most {MAX_EVENT_BYTES}")
        return TaskEvent(seq, name, data, attempt, at)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "name": self.name,
            "data": self.data,
            "attempt": self.attempt,
            "at": to_rfc3339(self.at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskEvent:
        return cls(
            int(data["seq"]),
            str(data["name"]),
            data.get("data"),
            int(data.get("attempt", 0)),
            from_rfc3339(data["at"]) or now(),
        )


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver a completion webhook."""

    at: datetime
    webhook_id: str
    status_code: int | None
    duration_ms: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": to_rfc3339(self.at),
            "webhook_id": self.webhook_id,
            "status_code": self.status_code,
            "duration_ms": self.duration_ms,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Delivery:
        return cls(
            at=from_rfc3339(data["at"]) or now(),
            webhook_id=str(data["webhook_id"]),
            status_code=int(data["status_code"]) if data.get("status_code") is not None else None,
            duration_ms=int(data.get("duration_ms", 0)),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class Task:
    id: str
    type: str
    payload: Any
    status: Status = Status.QUEUED
    attempts: int = 0
    max_attempts: int = 3
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    run_at: datetime | None = None
    result: Any = None
    error: TaskError | None = None
    worker: str | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    expires_at: int | None = None
    # The scopes of the token that submitted it (None: not recorded), so a handler can
    # refuse to do for a task what its submitter could not do through the API.
    submitter_scopes: frozenset[str] | None = None
    # What the handler reported: the latest progress, the last MAX_EVENTS events.
    progress: Progress | None = None
    events: tuple[TaskEvent, ...] = ()
    # Completion webhook: the URL given at submit (else the TaskType's), the name of the
    # token that submitted (its secret signs the webhook), where delivery stands and the
    # last attempts (bounded: MAX_DELIVERIES).
    notify_url: str | None = None
    submitter: str | None = None
    notify_state: NotifyState | None = None
    deliveries: tuple[Delivery, ...] = ()
    # Flow control (docs/TASKTYPES.md): the queue level, what holds a due task back, and the
    # key that keeps at most one active task of the type (kept as given: it is shown back).
    priority: Priority = Priority.NORMAL
    waiting: Waiting | None = None
    unique_key: str | None = None

    def with_(self, **changes: Any) -> Task:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The public representation served by the API and read by the client."""
        return {
            "id": self.id,
            "type": self.type,
            "payload": self.payload,
            "status": self.status.value,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "created_at": to_rfc3339(self.created_at),
            "updated_at": to_rfc3339(self.updated_at),
            "started_at": to_rfc3339(self.started_at),
            "finished_at": to_rfc3339(self.finished_at),
            "run_at": to_rfc3339(self.run_at),
            "result": self.result,
            "error": self.error.to_json() if self.error else None,
            "worker": self.worker,
            "cancel_requested": self.cancel_requested,
            "progress": self.progress.to_json() if self.progress else None,
            "events": [e.to_json() for e in self.events],
            "priority": self.priority.value,
            "waiting": self.waiting.to_json() if self.waiting else None,
            "unique_key": self.unique_key,
            **self._notify_json(),
        }

    def _notify_json(self) -> dict[str, Any]:
        # Only on tasks that have a webhook, so other records read as they always did.
        if self.notify_url is None and self.notify_state is None:
            return {}
        state = self.notify_state.value if self.notify_state else None
        return {"notify": {"url": self.notify_url, "state": state}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        error = data.get("error")
        return cls(
            id=data["id"],
            type=data["type"],
            payload=data.get("payload"),
            status=Status(data["status"]),
            attempts=int(data.get("attempts", 0)),
            max_attempts=int(data.get("max_attempts", 3)),
            created_at=from_rfc3339(data["created_at"]) or now(),
            updated_at=from_rfc3339(data.get("updated_at")) or now(),
            started_at=from_rfc3339(data.get("started_at")),
            finished_at=from_rfc3339(data.get("finished_at")),
            run_at=from_rfc3339(data.get("run_at")),
            result=data.get("result"),
            error=TaskError(**error) if error else None,
            worker=data.get("worker"),
            cancel_requested=bool(data.get("cancel_requested", False)),
            progress=Progress.from_json(data["progress"]) if data.get("progress") else None,
            events=tuple(TaskEvent.from_json(e) for e in data.get("events") or ()),
            notify_url=(data.get("notify") or {}).get("url"),
            notify_state=NotifyState(state) if (state := (data.get("notify") or {}).get("state")) else None,
            priority=Priority(data.get("priority") or Priority.NORMAL),
            waiting=Waiting.from_json(data["waiting"]) if data.get("waiting") else None,
            unique_key=data.get("unique_key"),
        )


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    started_at: datetime
    last_heartbeat: datetime
    in_flight: int
    concurrency: int
    version: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = to_rfc3339(self.started_at)
        data["last_heartbeat"] = to_rfc3339(self.last_heartbeat)
        return data


@dataclass(frozen=True)
class Message:
    """One delivery of a task message: the id it names and the handle to ack it."""

    task_id: str
    task_type: str
    receipt: str
    receive_count: int = 1
    sent_at: datetime | None = None
    # The submitter's trace context (W3C ``traceparent`` ...), carried beside the body.
    trace_context: dict[str, str] = field(default_factory=dict, hash=False)
    # The queue it came from (set by the receiving broker): its deletes, visibility changes
    # and re-sends go back to that queue.
    lane: Priority = Priority.NORMAL
    # The task as created, when the message carries a copy (``encode_message``); a re-send
    # carries it on.
    copy: TaskCopy | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class QueueDepth:
    visible: int = 0
    in_flight: int = 0
    delayed: int = 0

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed

    def to_json(self) -> dict[str, int]:
        return {"visible": self.visible, "in_flight": self.in_flight, "delayed": self.delayed}


# A task record keeps at most this many delivery attempts (the newest).
MAX_DELIVERIES = 20


# A task message carries a copy of what its record held at creation when the copy is no
# larger than this: the worker's claim then proves the copy equal to the record (one
# conditional write, no item sent back). A larger task's message names it only.
MAX_COPY_BYTES = 32 * 1024


def creation_copy(task: Task) -> dict[str, Any]:
    """What a task's record holds at creation and no write changes before its first
    attempt: all a worker needs to run that attempt, besides what the claim writes."""
    copy: dict[str, Any] = {
        "type": task.type,
        "payload": task.payload,
        "max_attempts": task.max_attempts,
        "created_at": to_rfc3339(task.created_at),
    }
    optional = {
        "run_at": to_rfc3339(task.run_at),
        "submitter_scopes": sorted(task.submitter_scopes) if task.submitter_scopes is not None else None,
        "submitter": task.submitter,
        "notify_url": task.notify_url,
        "idempotency_key": task.idempotency_key,
        "unique_key": task.unique_key,
        "priority": task.priority.value if task.priority is not Priority.NORMAL else None,
    }
    copy |= {k: v for k, v in optional.items() if v is not None}
    return copy


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def copy_digest(task_id: str, copy: dict[str, Any]) -> str:
    """SHA-256 of the task id and its creation copy, canonically encoded (22 chars)."""
    raw = hashlib.sha256(f"{task_id}\n{_canonical(copy)}".encode()).digest()
    return base64.urlsafe_b64encode(raw[:16]).decode().rstrip("=")


@dataclass(frozen=True)
class TaskCopy:
    """A message's copy of a task as created, and the digest its record must match."""

    task: Task
    digest: str


def task_from_copy(task_id: str, copy: dict[str, Any]) -> TaskCopy:
    """The queued task a creation copy describes; ValueError when it is not one."""
    try:
        scopes = copy.get("submitter_scopes")
        created = from_rfc3339(copy["created_at"])
        if created is None or not isinstance(copy["type"], str):
            raise ValueError("a copy names its type and creation time")
        task = Task(
            id=task_id,
            type=copy["type"],
            payload=copy["payload"],
            max_attempts=int(copy["max_attempts"]),
            created_at=created,
            updated_at=created,
            run_at=from_rfc3339(copy.get("run_at")),
            submitter_scopes=frozenset(scopes) if scopes is not None else None,
            submitter=copy.get("submitter"),
            notify_url=copy.get("notify_url"),
            idempotency_key=copy.get("idempotency_key"),
            unique_key=copy.get("unique_key"),
            priority=Priority(copy.get("priority") or Priority.NORMAL),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a task copy: {exc}") from exc
    return TaskCopy(task, copy_digest(task_id, copy))


def encode_message(task_id: str, task_type: str, task: Task | None = None) -> str:
    """A task message: its id and type, and with ``task`` (a task just created) a copy of
    it when small enough. Readers that know only ``id`` and ``type`` ignore the copy."""
    body: dict[str, Any] = {"id": task_id, "type": task_type}
    if task is not None:
        copy = creation_copy(task)
        text = json.dumps({**body, "copy": copy}, separators=(",", ":"))
        if len(text) <= MAX_COPY_BYTES:
            return text
    return json.dumps(body, separators=(",", ":"))


def decode_message(body: str) -> tuple[str, str, TaskCopy | None]:
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise ValueError("message body is not a Conveyor task message")
    copy = data.get("copy")
    try:
        # An unreadable copy costs only the shortcut: the task is claimed by its id.
        taken = task_from_copy(data["id"], copy) if isinstance(copy, dict) else None
    except ValueError:
        taken = None
    return data["id"], str(data.get("type", "")), taken
