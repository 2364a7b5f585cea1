"""The firing loop: turns schedules into tasks, exactly one per (schedule, slot).

It runs in the API, beside the maintenance loop (conveyor/maintenance.py): the API always
has a replica, has AWS access, and keeps running when KEDA scales the workers to zero.

Every replica runs it, with no leader. Exactly-once comes from the engine's idempotency
primitive: a slot is submitted with the key ``schedule:<namespace>/<name>:<slot, UTC>``
under a principal no token can have, so a second fire of the slot -- by another replica,
or by this one after a crash between submit and bookkeeping -- returns the first task.
The per-schedule state in the store (last slot handled, last task) only moves forward
(a conditional write); it tells a replica which slots are still to do after an outage
and feeds the API and the TaskSchedule status, but it is not what prevents duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from conveyor import schedule as planning
from conveyor.engine import Engine, Submission, idempotency_digest
from conveyor.errors import ConveyorError, Duplicate, IdempotencyConflict, ValidationError
from conveyor.maintenance import running
from conveyor.metrics import SchedulerMetrics
from conveyor.model import Task, to_rfc3339
from conveyor.ports import ScheduleState
from conveyor.schedule import Action, Outcome, ScheduleSpec

log = logging.getLogger("conveyor.scheduler")

# Idempotency keys are "<principal>:<key>"; a token name starts with a letter or digit
# (conveyor/tokens.py), so no client's key can collide with a schedule's.
PRINCIPAL = "#scheduler"
STATUS_EVERY_SECONDS = 30.0
NEXT_RUNS = 5

StatusSink = Callable[[ScheduleSpec, dict[str, Any]], None]


@dataclass(frozen=True)
class Fired:
    """What one tick did with one slot."""

    schedule: str
    slot: datetime
    outcome: str
    task_id: str | None = None
    created: bool = False


class Scheduler:
    """Plans every schedule at each tick (conveyor/schedule.py) and carries the plan out.

    ``source`` gives the current schedules; ``clock`` the time (default: the engine's; tests drive it). A
    schedule whose task type is unknown or not enabled is treated as not ready.
    """

    def __init__(
        self,
        engine: Engine,
        source: Callable[[], list[ScheduleSpec]],
        *,
        metrics: SchedulerMetrics | None = None,
        clock: Callable[[], datetime] | None = None,
        status_sink: StatusSink | None = None,
        interval: float | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self.source = source
        self.metrics = metrics
        self.clock = clock or engine.clock.now  # one clock for the engine and its schedules
        self.status_sink = status_sink
        self.interval = engine.settings.scheduler_interval_seconds if interval is None else interval
        # A slot picked up within this long of its due time fired on time (not catch-up).
        self.grace_seconds = max(60.0, 2 * self.interval)
        self._sleep = sleep
        # Per schedule: (its spec, when its next slot is due). Until then nothing is to do,
        # so a tick reads nothing from the store for it.
        self._next_due: dict[str, tuple[dict[str, Any], datetime | None]] = {}
        self._status_sent: dict[str, tuple[float, dict[str, Any]]] = {}
        self._counted: set[str] = set()
        self.ticks = 0

    # -- the schedules ---------------------------------------------------------------

    def specs(self) -> list[ScheduleSpec]:
        """The schedules, with a task type that cannot take tasks making one not ready."""
        registry = self.engine.registry
        out = []
        for spec in self.source():
            if spec.ready:
                tasktype = registry.get(spec.task_type)
                if tasktype is None:
                    spec = replace(spec, ready=False, reason=f"task type {spec.task_type!r} is not known")
                elif not tasktype.runnable:
                    spec = replace(spec, ready=False, reason=f"task type {spec.task_type!r} is not enabled")
            out.append(spec)
        return out

    def find(self, name: str) -> ScheduleSpec | None:
        """The schedule called ``name`` (the API serves one namespace's schedules)."""
        return next((s for s in self.specs() if s.name == name), None)

    def view(self, spec: ScheduleSpec, next_runs: int = 0) -> dict[str, Any]:
        """A schedule as the API serves it."""
        now = self.clock()
        state = self.engine.store.schedule_state(spec.key) or ScheduleState(spec.key)
        upcoming = planning.next_runs(spec, now, max(1, next_runs)) if spec.ready else []
        data: dict[str, Any] = {
            "name": spec.name,
            "namespace": spec.namespace,
            "task_type": spec.task_type,
            "schedule": spec.schedule,
            "time_zone": spec.time_zone,
            "suspended": spec.suspend,
            "next_run_at": to_rfc3339(upcoming[0]) if upcoming and not spec.suspend else None,
            "last_run_at": to_rfc3339(state.last_run_at),
            "last_task_id": state.last_task_id,
            "ready": spec.ready,
            "reason": spec.reason,
        }
        if next_runs:
            data["next_runs"] = [to_rfc3339(t) for t in upcoming[:next_runs]] if not spec.suspend else []
        return data

    # -- firing ------------------------------------------------------------------------

    def _submit(
        self, spec: ScheduleSpec, key: str | None, scopes: frozenset[str] | None
    ) -> tuple[Task, bool]:
        sub = Submission(
            type=spec.task_type, payload=spec.payload, max_attempts=spec.max_attempts, scopes=scopes
        )
        body = {"type": spec.task_type, "payload": spec.payload, "max_attempts": spec.max_attempts}
        return self.engine.submit(sub, key, body)

    def trigger(
        self, spec: ScheduleSpec, key: str | None = None, scopes: frozenset[str] | None = None
    ) -> tuple[Task, bool]:
        """Run the schedule once now, outside its slots; returns (task, created). ``key``
        is the caller's Idempotency-Key, already scoped to the caller; ``scopes`` the
        caller's, kept on the task as for any submit. Raises ValidationError when the
        schedule is not ready."""
        if not spec.ready:
            raise ValidationError(f"schedule {spec.name!r} is not ready: {spec.reason}")
        task, created = self._submit(spec, key, scopes)
        if created:
            self.engine.store.record_schedule_task(spec.key, task.id, task.created_at)
            self._push_status(spec, force=True)
        return task, created

    def _previous(self, state: ScheduleState | None) -> Task | None:
        if state is None or state.last_task_id is None:
            return None
        return self.engine.store.get(state.last_task_id, consistent=True)

    def _count(self, spec: ScheduleSpec, outcome: str, n: int = 1) -> None:
        if self.metrics is not None and n:
            self.metrics.fires.labels(schedule=spec.key, outcome=outcome).inc(n)

    def _fire(
        self, spec: ScheduleSpec, slot: datetime, outcome: Outcome, now: datetime, state: ScheduleState | None
    ) -> Fired:
        """Fire one slot; ``state`` is the schedule's state as just read, or None to read it."""
        # Allow fires whatever the previous task is doing: no store reads to learn it.
        previous = None
        if spec.concurrency_policy != "Allow":
            previous = self._previous(state or self.engine.store.schedule_state(spec.key))
        action = planning.decide(spec.concurrency_policy, previous.status if previous else None)
        if action is Action.SKIP:
            if self.engine.store.advance_schedule(spec.key, slot):
                self._count(spec, Outcome.SKIPPED_OVERLAP)
            return Fired(spec.key, slot, Outcome.SKIPPED_OVERLAP, previous.id if previous else None)
        if action is Action.REPLACE and previous is not None:
            try:
                self.engine.cancel(previous.id)
            except ConveyorError as exc:  # it finished meanwhile, or another replica cancelled it
                log.info("schedule %s: previous task %s not cancelled: %s", spec.key, previous.id, exc)
        key = f"{PRINCIPAL}:{planning.idempotency_key(spec, slot)}"
        try:
            task, created = self._submit(spec, key, None)
        except IdempotencyConflict:
            # The slot was fired already, from an older version of the schedule.
            log.warning("schedule %s: slot %s already fired with another payload", spec.key, slot)
            self.engine.store.advance_schedule(spec.key, slot)
            return Fired(spec.key, slot, outcome)
        except Duplicate as exc:
            # The type is unique (onDuplicate reject) and its key is held: the slot's work is
            # already queued or running, as with concurrencyPolicy Forbid.
            log.info("schedule %s: slot %s skipped: %s", spec.key, slot, exc)
            if self.engine.store.advance_schedule(spec.key, slot):
                self._count(spec, Outcome.SKIPPED_OVERLAP)
            return Fired(spec.key, slot, Outcome.SKIPPED_OVERLAP, exc.existing)
        except ValidationError as exc:
            log.error("schedule %s: slot %s not fired: %s", spec.key, slot, exc)
            if self.engine.store.advance_schedule(spec.key, slot):
                self._count(spec, Outcome.FAILED)
            return Fired(spec.key, slot, Outcome.FAILED)
        if not created and task.idempotency_key != idempotency_digest(key):
            # Not this slot's task: the active one holding the type's unique key
            # (onDuplicate return-existing) already does the slot's work.
            log.info("schedule %s: slot %s skipped: task %s holds the unique key", spec.key, slot, task.id)
            if self.engine.store.advance_schedule(spec.key, slot):
                self._count(spec, Outcome.SKIPPED_OVERLAP)
            return Fired(spec.key, slot, Outcome.SKIPPED_OVERLAP, task.id)
        self.engine.store.advance_schedule(spec.key, slot, task.id, slot)
        if created:
            self._count(spec, outcome)
            if self.metrics is not None:
                self.metrics.lag.observe(max(0.0, (now - planning.due_at(spec, slot)).total_seconds()))
            log.info(
                "schedule %s: slot %s fired as task %s (%s)", spec.key, to_rfc3339(slot), task.id, outcome
            )
        return Fired(spec.key, slot, outcome, task.id, created)

    def run_schedule(self, spec: ScheduleSpec) -> list[Fired]:
        """Plan one schedule at the clock's now and carry the plan out."""
        now = self.clock()
        fingerprint = spec.to_json() | {"ready": spec.ready}
        cached = self._next_due.get(spec.key)
        if cached is not None and cached[0] == fingerprint and (cached[1] is None or now < cached[1]):
            return []
        state = self.engine.store.schedule_state(spec.key)
        if state is None or state.last_slot is None:
            # First sight of this schedule by any replica: it owes nothing from before now.
            # The baseline is stored at once, so a restart before the first slot cannot
            # lose that slot (a replica's memory would not survive it).
            baseline = planning.previous_slot(spec, now) or now
            self.engine.store.advance_schedule(spec.key, baseline)
            state = self.engine.store.schedule_state(spec.key)
        since = state.last_slot if state and state.last_slot else now
        plan = planning.plan(spec, since, now, self.grace_seconds)
        fired: list[Fired] = []
        for slot, outcome in plan.fire:
            fired.append(self._fire(spec, slot, outcome, now, state))
            state = None  # that fire moved it on: a next slot reads it afresh
        if plan.latest is not None:
            moved = self.engine.store.advance_schedule(spec.key, plan.latest)
            if moved or fired:
                self._count(spec, Outcome.SKIPPED_DEADLINE, len(plan.skipped))
                fired += [Fired(spec.key, s, Outcome.SKIPPED_DEADLINE) for s in plan.skipped]
        if plan.skipped:
            log.warning("schedule %s: %d missed slot(s) skipped", spec.key, len(plan.skipped))
        next_due = planning.due_at(spec, plan.next_slot) if plan.next_slot else None
        self._next_due[spec.key] = (fingerprint, next_due)
        return fired

    def _push_status(self, spec: ScheduleSpec, force: bool = False) -> None:
        """Send the schedule's status fields to the sink: at once when asked (after a
        fire), else when they changed, checked at most every STATUS_EVERY_SECONDS."""
        if self.status_sink is None:
            return
        sent = self._status_sent.get(spec.key)
        if not force and sent is not None and time.monotonic() - sent[0] < STATUS_EVERY_SECONDS:
            return
        state = self.engine.store.schedule_state(spec.key) or ScheduleState(spec.key)
        previous = self._previous(state)
        upcoming = planning.next_runs(spec, self.clock(), 1) if spec.ready and not spec.suspend else []
        fields = {
            "lastScheduleTime": to_rfc3339(state.last_run_at),
            "nextScheduleTime": to_rfc3339(upcoming[0]) if upcoming else None,
            "lastTaskId": state.last_task_id,
            "lastTaskStatus": previous.status.value if previous else None,
        }
        if not force and sent is not None and sent[1] == fields:
            self._status_sent[spec.key] = (time.monotonic(), fields)
            return
        try:
            self.status_sink(spec, fields)
        except Exception as exc:  # a status write never stops firing
            log.warning("schedule %s: status not written: %s", spec.key, exc)
        self._status_sent[spec.key] = (time.monotonic(), fields)

    def tick(self) -> list[Fired]:
        """One pass over every schedule. A failing schedule is logged and does not stop
        the others; AWS being down leaves its slots for the next tick (within deadline)."""
        fired: list[Fired] = []
        for spec in self.specs():
            if self.metrics is not None and spec.key not in self._counted:
                # Every outcome's series from 0, so the first miss shows as an increase.
                self._counted.add(spec.key)
                for outcome in Outcome:
                    self.metrics.fires.labels(schedule=spec.key, outcome=outcome.value)
            try:
                done = self.run_schedule(spec)
                fired += done
                self._push_status(spec, force=any(f.task_id for f in done))
            except ConveyorError as exc:
                log.warning("schedule %s: not fired this round: %s", spec.key, exc)
            except Exception:
                log.exception("schedule %s: not fired this round", spec.key)
        self.ticks += 1
        return fired

    async def run(self) -> None:
        """Forever, until cancelled: a tick every ``interval`` seconds (boto3 blocks, so
        off the event loop). A little jitter keeps replicas from reading in lockstep."""
        rng = random.Random()
        while True:
            await asyncio.to_thread(self.tick)
            await self._sleep(self.interval * (0.8 + 0.4 * rng.random()))


@asynccontextmanager
async def background(scheduler: Scheduler) -> AsyncIterator[Scheduler | None]:
    """Run the loop as a task while the block runs (when ``scheduler_enabled``)."""
    if not scheduler.engine.settings.scheduler_enabled:
        yield None
        return
    log.info("schedule firing loop running every ~%.0fs", scheduler.interval)
    async with running(scheduler.run(), "conveyor-scheduler"):
        yield scheduler
