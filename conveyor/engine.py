"""What Conveyor does with tasks, independent of HTTP and of the worker loop.

The record in the store is the truth; the message in the broker only says "look at
task X". Submit writes the record first and sends the message second: if the process
dies in between, the record is ``queued`` with no message, and ``sweep`` (run by the
API, conveyor/maintenance.py) finds it and sends one. A duplicate message is harmless
because every transition is a conditional write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from conveyor import flowkeys, tracing
from conveyor.clock import SYSTEM, Clock
from conveyor.errors import Conflict, ConveyorError, Duplicate, NotFound, Unavailable, ValidationError
from conveyor.model import (
    NOTIFY_TYPE,
    PRIORITIES,
    NotifyState,
    Priority,
    QueueDepth,
    Status,
    Task,
    TaskError,
    WorkerInfo,
    new_id,
)
from conveyor.ports import (
    BROKER_MAX_DELAY_SECONDS,
    Broker,
    FlowLimits,
    Outgoing,
    Page,
    TaskStore,
    UniqueLock,
    WorkerRegistry,
    unique_lock_id,
)
from conveyor.registry import OnDuplicate, Registry, RegistryWatcher, TaskType, Uniqueness, UniqueWhile
from conveyor.settings import Settings

log = logging.getLogger("conveyor.engine")

MAX_DELAY_SECONDS = 14 * 24 * 3600  # SQS retention: no message outlives it


def body_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def idempotency_digest(key: str) -> str:
    """What a task record keeps of the Idempotency-Key it was submitted with."""
    return hashlib.sha256(key.encode()).hexdigest()


# Rounds of a unique submit: each one meets a holder that changed since the last read
# (finished, replaced by another submit): each loss is another submit's win, so a burst
# of concurrent replaces settles well within this.
UNIQUE_ROUNDS = 32


def uniqueness_of(tasktype: TaskType, unique_key: str | None) -> Uniqueness | None:
    """The uniqueness rule a submit of ``tasktype`` follows: the type's, else (a submit
    naming a ``unique_key`` for a type without one) the defaults."""
    if tasktype.uniqueness is not None:
        return tasktype.uniqueness
    return Uniqueness() if unique_key is not None else None


def lock_key(task: Task, tasktype: TaskType) -> str:
    """The key ``task`` holds: the submitted ``unique_key``, else its payload's value at the
    type's ``uniqueness.key`` (flowkeys: a string as itself, other values as canonical
    JSON), else one key for the whole type. Only its digest is stored (in the lock's id):
    a payload value may be personal data, so the record keeps only a submitted key."""
    if task.unique_key is not None:
        return task.unique_key
    pointer = tasktype.uniqueness.key if tasktype.uniqueness else None
    return flowkeys.key_of(task.payload, pointer)


def active(task: Task, while_: UniqueWhile) -> bool:
    """Whether ``task`` still holds its unique key under ``while_``: ``queued``, until its
    first attempt starts (a task queued again for a later attempt has started: another may
    have taken the key meanwhile); ``queued-or-running``, until it finishes."""
    if while_ is UniqueWhile.QUEUED_OR_RUNNING:
        return task.status in (Status.QUEUED, Status.RUNNING)
    return task.status is Status.QUEUED and task.attempts == 0


@dataclass(frozen=True)
class Submission:
    type: str
    payload: Any
    delay_seconds: float | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    scopes: frozenset[str] | None = None  # the submitting token's, kept on the record
    notify_url: str | None = None  # POST the finished task here (docs/WEBHOOKS.md)
    submitter: str | None = None  # the submitting token's name: its webhook secret signs
    priority: Priority | None = None  # None: the TaskType's
    unique_key: str | None = None  # None: from the TaskType's uniqueness.key, if any


def _sum(depths: Sequence[QueueDepth]) -> QueueDepth:
    return QueueDepth(
        visible=sum(d.visible for d in depths),
        in_flight=sum(d.in_flight for d in depths),
        delayed=sum(d.delayed for d in depths),
    )


@dataclass(frozen=True)
class Stats:
    counts: dict[Status, int]
    queue: QueueDepth  # all priority levels together
    dlq: QueueDepth
    workers: int
    oldest_queued_age_seconds: float
    queues: Mapping[Priority, QueueDepth] | None = None  # per level

    def to_json(self) -> dict[str, Any]:
        c = self.counts
        return {
            # the seed's fields, kept so its dashboards and scripts keep working
            "total_tasks": sum(c.values()),
            "pending_tasks": c.get(Status.QUEUED, 0),
            "completed_tasks": c.get(Status.SUCCEEDED, 0),
            "failed_tasks": c.get(Status.FAILED, 0),
            "active_workers": self.workers,
            "queue_depth": self.queue.visible + self.queue.delayed,
            # and the full picture
            "tasks": {s.value: c.get(s, 0) for s in Status},
            "queue": self.queue.to_json(),
            "queues": {p.value: (self.queues or {}).get(p, QueueDepth()).to_json() for p in PRIORITIES},
            "dlq": self.dlq.to_json(),
            "dlq_depth": self.dlq.total,
            "workers": self.workers,
            "oldest_queued_age_seconds": round(self.oldest_queued_age_seconds, 3),
        }


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        broker: Broker,
        dead_letters: Broker,
        registry: RegistryWatcher,
        *,
        workers: WorkerRegistry,
        limits: FlowLimits | None = None,
        clock: Clock = SYSTEM,
        lanes: Mapping[Priority, Broker] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store
        self.workers = workers
        # Fleet-wide concurrency and rate limits, shared by every worker: the store's
        # (bootstrap wires DynamoDB's). None: workers cannot run types that set them.
        self.limits = limits
        self.broker = broker  # the normal level's queue
        # One queue per priority level; a level not given shares ``broker``.
        self.lanes: dict[Priority, Broker] = {p: (lanes or {}).get(p, broker) for p in PRIORITIES}
        self.dead_letters = dead_letters
        self.registry_watcher = registry
        self._stats: tuple[float, Stats] | None = None
        self._stats_lock = threading.Lock()

    @property
    def registry(self) -> Registry:
        return self.registry_watcher.current()

    def lane(self, priority: Priority) -> Broker:
        """The queue of a priority level (a task's, or the one a message came from)."""
        return self.lanes[priority]

    def queues(self) -> list[tuple[Priority, Broker]]:
        """Each distinct queue once, with the level it is counted under (normal first, then
        high, low): levels sharing one queue (an engine given one broker) are one queue to
        poll and count."""
        seen: dict[int, tuple[Priority, Broker]] = {}
        for p in (Priority.NORMAL, Priority.HIGH, Priority.LOW):
            seen.setdefault(id(self.lanes[p]), (p, self.lanes[p]))
        return list(seen.values())

    # -- submit --------------------------------------------------------------------------

    def _prepare(self, sub: Submission, registry: Registry, pointer: str = "") -> Task:
        tasktype = registry.get(sub.type)
        if tasktype is None or not tasktype.runnable:
            known = registry.enabled()
            why = "is not enabled" if tasktype is not None else "is not a known task type"
            raise ValidationError(
                f"task type {sub.type!r} {why}; enabled types: {', '.join(known) or 'none'}",
                [{"pointer": f"{pointer}/type", "message": f"must be one of: {', '.join(known)}"}],
            )
        errors = registry.validate_payload(sub.type, sub.payload)
        if errors:
            for e in errors:
                e["pointer"] = pointer + e["pointer"]
            raise ValidationError(f"payload does not match the schema of {sub.type!r}", errors)
        private_ok = tasktype.notify is not None and tasktype.notify.allow_private_networks
        if sub.notify_url and not sub.notify_url.lower().startswith("https://") and not private_ok:
            # The body is the task with its result: not sent in the clear across networks.
            raise ValidationError(
                "notify.url must be https:// (the task type does not allow private networks)",
                [{"pointer": f"{pointer}/notify/url", "message": "an https:// URL"}],
            )
        self._check_unique_key(sub, tasktype, pointer)
        at = self.clock.now()
        run_at = sub.run_at
        if sub.delay_seconds:
            run_at = at + timedelta(seconds=sub.delay_seconds)
        if run_at is not None:
            if run_at <= at:
                run_at = None
            elif (run_at - at).total_seconds() > MAX_DELAY_SECONDS:
                field = "delay_seconds" if sub.delay_seconds else "run_at"
                raise ValidationError(
                    "tasks can be delayed by at most 14 days (SQS retention)",
                    [{"pointer": f"{pointer}/{field}", "message": "at most 14 days ahead"}],
                )
        return Task(
            id=new_id(),
            type=sub.type,
            payload=sub.payload,
            max_attempts=sub.max_attempts or tasktype.max_attempts,
            created_at=at,
            updated_at=at,
            run_at=run_at,
            submitter_scopes=sub.scopes,
            notify_url=sub.notify_url,
            submitter=sub.submitter,
            priority=sub.priority or tasktype.priority,
            unique_key=sub.unique_key,
        )

    @staticmethod
    def _check_unique_key(sub: Submission, tasktype: TaskType, pointer: str) -> None:
        """Refuse a submit without a key to hold: a type unique by a payload field whose
        payload lacks it (it would otherwise share one key with every other such task)."""
        if sub.unique_key is not None or tasktype.uniqueness is None or tasktype.uniqueness.key is None:
            return
        at = tasktype.uniqueness.key
        try:
            flowkeys.value_at(sub.payload, at)
        except flowkeys.Missing as exc:
            raise ValidationError(
                f"task type {sub.type!r} is unique by the payload's {at}, which this payload lacks",
                [
                    {
                        "pointer": f"{pointer}/payload{at}",
                        "message": "required: the task type's uniqueness key (or give unique_key)",
                    }
                ],
            ) from exc

    def _delay(self, task: Task) -> int:
        if task.run_at is None:
            return 0
        wait = (task.run_at - self.clock.now()).total_seconds()
        return max(0, min(BROKER_MAX_DELAY_SECONDS, int(wait + 0.999)))

    def submit(
        self, sub: Submission, idempotency_key: str | None = None, body: Any = None
    ) -> tuple[Task, bool]:
        """Record and enqueue one task; returns (task, created). Not created: the task of a
        repeated Idempotency-Key, or the active task holding the unique key (the type's
        ``uniqueness.onDuplicate`` is return-existing). Raises ValidationError,
        IdempotencyConflict, Duplicate, Unavailable (nothing was recorded)."""
        registry = self.registry
        task = self._prepare(sub, registry)
        digest = idempotency_digest(idempotency_key) if idempotency_key else None
        if digest:
            task = task.with_(idempotency_key=digest)
        tasktype = registry.get(task.type)
        rule = uniqueness_of(tasktype, task.unique_key) if tasktype is not None else None
        hashed = body_hash(body) if idempotency_key else None
        if tasktype is None or rule is None:
            task, created = self.store.create(task, hashed)
        else:
            task, created = self._create_unique(task, hashed, tasktype, rule)
        repeat = not created and digest is not None and task.idempotency_key == digest
        if created or (repeat and task.status is Status.QUEUED and task.attempts == 0):
            # A repeat of an idempotent submit re-sends too: its first send may have been
            # the one that did not happen. Duplicates are harmless.
            self._dispatch(task)
        return task, created

    def _create_unique(
        self, task: Task, hashed: str | None, tasktype: TaskType, rule: Uniqueness
    ) -> tuple[Task, bool]:
        """Create ``task`` holding its unique key (docs/TASKTYPES.md). The lock names its
        holder; a holder no longer active (by ``rule.while_``) is taken over, conditional on
        its still being the holder, so no release write is needed and none is left stuck."""
        lock = self._lock(task, tasktype, task.created_at)
        for _ in range(UNIQUE_ROUNDS):
            try:
                created = self.store.create(task, hashed, lock)
            except Duplicate as held:
                holder = self.store.get(held.existing, consistent=True) if held.existing else None
                if holder is None or not active(holder, rule.while_):
                    lock = replace(lock, take_from=held.existing, cancel=False, notify=False)
                    continue
                if rule.on_duplicate is OnDuplicate.RETURN_EXISTING:
                    return holder, False
                if rule.on_duplicate is OnDuplicate.REPLACE and holder.status is Status.QUEUED:
                    notify = self.notifies(holder.type) or holder.notify_url is not None
                    lock = replace(lock, take_from=holder.id, cancel=True, notify=notify)
                    continue
                why = "queued" if holder.status is Status.QUEUED else "running, and cannot be replaced"
                raise Duplicate(f"task {holder.id} with this unique key is {why}", holder.id) from None
            if lock.cancel and lock.take_from:
                replaced = self.store.get(lock.take_from, consistent=True)
                if replaced is not None:
                    self._send_notify(replaced)
                log.info("task %s replaced queued task %s (unique key)", task.id, lock.take_from)
            return created
        raise Conflict("the task holding this unique key kept changing; try again")

    def _lock(self, task: Task, tasktype: TaskType, at: datetime) -> UniqueLock:
        """The unique lock of ``task``, kept (TTL) while a task taking it at ``at`` can be active."""
        key = lock_key(task, tasktype)
        expires = int(at.timestamp()) + MAX_DELAY_SECONDS + self.settings.retention_seconds
        return UniqueLock(unique_lock_id(task.type, flowkeys.digest(key)), expires)

    def _dispatch(self, task: Task, copied: bool = True) -> None:
        """Send ``task``'s message; ``copied``: with a copy of the task as created (a retried
        task's record no longer claims to be one)."""
        try:
            tracing.annotate(task_id=task.id, task_type=task.type)
            copy = task if copied else None
            self.lane(task.priority).send(task.id, task.type, self._delay(task), tracing.inject(), copy)
        except Unavailable as exc:
            # The record is committed: the sweeper sends the message once SQS answers.
            log.warning("task %s recorded but not sent (%s); the sweeper will send it", task.id, exc)

    def submit_batch(self, subs: Sequence[Submission]) -> list[Task]:
        registry = self.registry
        for i, sub in enumerate(subs):
            tasktype = registry.get(sub.type)
            if tasktype is not None and uniqueness_of(tasktype, sub.unique_key) is not None:
                # A batch is written as a whole, without locks: a unique task is submitted alone.
                field = "unique_key" if sub.unique_key is not None else "type"
                raise ValidationError(
                    "a batch cannot hold tasks with unique keys; submit them one at a time",
                    [
                        {
                            "pointer": f"/tasks/{i}/{field}",
                            "message": "tasks of a type with uniqueness, or with a unique_key, "
                            "are submitted to POST /v1/tasks",
                        }
                    ],
                )
        tasks = [self._prepare(s, registry, f"/tasks/{i}") for i, s in enumerate(subs)]
        self.store.create_many(tasks)
        failed: list[str] = []
        context = tracing.inject()
        for priority in PRIORITIES:
            items: list[Outgoing] = [
                (t.id, t.type, self._delay(t), t) for t in tasks if t.priority is priority
            ]
            if items:
                failed += self.lane(priority).send_many(items, context)
        if failed:
            log.warning("%d batch tasks recorded but not sent; the sweeper will send them", len(failed))
        return tasks

    # -- reads ---------------------------------------------------------------------------

    def get(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None:
            raise NotFound(task_id)
        return task

    def query(
        self,
        status: Status | None = None,
        task_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        return self.store.query(status, task_type, limit, cursor)

    def live_workers(self) -> list[WorkerInfo]:
        horizon = self.clock.now() - timedelta(seconds=self.settings.worker_dead_after)
        return sorted(
            (w for w in self.workers.workers() if w.last_heartbeat >= horizon),
            key=lambda w: w.started_at,
        )

    def stats(self) -> Stats:
        """Totals, queue depths and workers, cached briefly: dashboards poll this."""
        with self._stats_lock:
            if self._stats and self.clock.monotonic() - self._stats[0] < self.settings.stats_cache_seconds:
                return self._stats[1]
            oldest = self.store.oldest_queued()
            age = 0.0
            if oldest is not None:
                since = max(oldest.created_at, oldest.run_at or oldest.created_at)
                age = max(0.0, (self.clock.now() - since).total_seconds())
            queues = self.depths()
            stats = Stats(
                counts=self.store.count_by_status(),
                queue=_sum(list(queues.values())),
                dlq=self.dead_letters.depth(),
                workers=len(self.live_workers()),
                oldest_queued_age_seconds=age,
                queues=queues,
            )
            self._stats = (self.clock.monotonic(), stats)
            return stats

    def depths(self) -> dict[Priority, QueueDepth]:
        """Each level's queue depth; levels sharing a queue count it once."""
        counted = dict(self.queues())
        return {p: counted[p].depth() if p in counted else QueueDepth() for p in PRIORITIES}

    # -- admin ---------------------------------------------------------------------------

    def cancel(self, task_id: str) -> Task:
        seen = self.store.get(task_id)
        task = self.store.cancel(task_id, self.clock.now(), self.notifies(seen.type if seen else None))
        if task.status is Status.RUNNING and task.worker:
            # The running handler learns of it from its worker's next heartbeat.
            self.workers.request_cancel(task.worker, task.id)
        if task.status is Status.CANCELLED:
            self._send_notify(task)
        return task

    def notifies(self, task_type: str | None) -> bool:
        """Whether tasks of ``task_type`` have a completion webhook by their TaskType."""
        tasktype = self.registry.get(task_type) if task_type else None
        return bool(tasktype and tasktype.notify and tasktype.notify.url)

    def _send_notify(self, task: Task) -> None:
        """Queue the webhook of a task finished outside a worker's attempt. Should the send
        fail, the task's own message still in the queue (if any) sends it when it comes
        back (lifecycle.finished)."""
        if task.notify_state is not NotifyState.PENDING:
            return
        try:
            self.lane(task.priority).send(task.id, NOTIFY_TYPE)
        except ConveyorError as exc:
            log.warning("task %s: its webhook's notify message could not be sent (%s)", task.id, exc)

    def retry(self, task_id: str) -> Task:
        """Queue a failed or cancelled task again. A task of a unique type takes its key
        back with it: while another task holding the key is active, Duplicate (409)."""
        current = self.store.get(task_id, consistent=True)
        tasktype = self.registry.get(current.type) if current is not None else None
        rule = uniqueness_of(tasktype, current.unique_key) if current and tasktype else None
        if current is None or tasktype is None or rule is None:
            task = self.store.retry(task_id, self.clock.now())
        else:
            task = self._retry_unique(current, tasktype, rule)
        self._dispatch(task, copied=False)
        return task

    def _retry_unique(self, task: Task, tasktype: TaskType, rule: Uniqueness) -> Task:
        at = self.clock.now()
        lock = self._lock(task, tasktype, at)
        for _ in range(UNIQUE_ROUNDS):
            try:
                return self.store.retry(task.id, at, lock)
            except Duplicate as held:
                holder = self.store.get(held.existing, consistent=True) if held.existing else None
                if holder is None or not active(holder, rule.while_):
                    lock = replace(lock, take_from=held.existing)
                    continue
                raise Duplicate(
                    f"task {holder.id} holds this unique key and is {holder.status.value}; "
                    "retry this one once it is done",
                    holder.id,
                ) from None
        raise Conflict("the task holding this unique key kept changing; try again")

    # -- housekeeping, run by the API (conveyor/maintenance.py) ------------------------------

    def sweep(self, older_than: float | None = None, limit: int = 100) -> int:
        """Send a message for ``queued`` tasks that have none (their submitter died between
        the record and the message, or SQS refused the send). Returns how many were sent.

        A task queued for longer than ``older_than`` is only a suspect: in a backlog every
        old task still has its message. So suspects are sent only when the queue holds
        fewer messages than there are unfinished tasks -- the deficit is the orphans.
        """
        horizon = self.clock.now() - timedelta(
            seconds=self.settings.redispatch_after_seconds if older_than is None else older_than
        )
        suspects = [
            t
            for t in self.store.queued_before(horizon, limit)
            if (t.run_at is None or t.run_at <= self.clock.now())
            and t.updated_at <= horizon
            and not self._paused(t.type)
        ]
        if not suspects:
            return 0
        counts = self.store.count_by_status()
        depth = _sum(list(self.depths().values()))
        deficit = counts.get(Status.QUEUED, 0) + counts.get(Status.RUNNING, 0) - depth.total
        if deficit <= 0:
            return 0
        sent = 0
        for task in suspects[:deficit] if deficit < len(suspects) else suspects:
            # Claim the resend first, so two sweepers never both send it.
            if self.store.mark_redispatched(task, self.clock.now()):
                self.lane(task.priority).send(task.id, task.type, self._delay(task))
                sent += 1
        if sent:
            log.warning("sweeper sent %d orphaned task(s)", sent)
        return sent

    def _paused(self, task_type: str) -> bool:
        tasktype = self.registry.get(task_type)
        return bool(tasktype and tasktype.paused)

    def reap(self, max_messages: int = 10, max_batches: int = 10) -> int:
        """Mark tasks whose message reached the dead-letter queue as failed.

        The message stays in the DLQ (hidden for 11 h between looks) so the DLQ alert
        fires and operators can inspect or redrive it; reaping it again is a no-op.
        Takes batches until one comes back short, at most ``max_batches`` per call, so a
        burst of dead letters is not cleared ten per round.
        """
        reaped = 0
        for _ in range(max_batches):
            messages = self.dead_letters.receive(max_messages, 0)
            for m in messages:
                if m.task_id:
                    error = TaskError(
                        "DeadLettered",
                        "the task's message was moved to the dead-letter queue after "
                        f"{self.settings.max_receive_count} receives (a worker crashed on it)",
                    )
                    failed = self.store.fail_unfinished(
                        m.task_id, error, self.clock.now(), self.notifies(m.task_type)
                    )
                    if failed is not None:
                        self._send_notify(failed)
                        reaped += 1
            if messages:
                self.dead_letters.change_visibility_many([(m.receipt, 11 * 3600) for m in messages])
            if len(messages) < max_messages:
                break
        return reaped
