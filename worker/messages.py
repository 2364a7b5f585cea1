"""One delivered message, after its first look: the fleet-wide limits of its type, the
claim and what the store's answers lead to (conveyor.lifecycle decides each step), and
the actions on the message itself."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from datetime import datetime, timedelta

from conveyor import flowkeys, lifecycle
from conveyor.blocking import BlockingCalls
from conveyor.engine import Engine
from conveyor.lifecycle import flow
from conveyor.metrics import WorkerMetrics
from conveyor.model import NOTIFY_TYPE, Message, NotifyState, Status, Task, TaskCopy, Waiting, WaitReason
from conveyor.ports import Claim, FlowLimits, Lease
from conveyor.registry import TaskType
from worker.attempt import Attempts
from worker.deletes import DeleteBatcher

log = logging.getLogger("conveyor.worker")


class Messages:
    def __init__(
        self,
        engine: Engine,
        io: BlockingCalls,
        deletes: DeleteBatcher,
        attempts: Attempts,
        worker_id: str,
        metrics: WorkerMetrics,
        rng: random.Random,
    ) -> None:
        self.engine, self.io, self.deletes, self.attempts = engine, io, deletes, attempts
        self.store, self.clock = engine.store, engine.clock
        self.id, self.metrics, self.rng = worker_id, metrics, rng
        self._claiming: Counter[str] = Counter()  # task ids with a claim call in flight
        self._admitting: set[str] = set()  # task ids taking their fleet-wide limits here

    # -- fleet-wide limits, before the claim ---------------------------------------------------

    async def admit(self, message: Message, tasktype: TaskType) -> list[Lease] | lifecycle.Action:
        """Take what the type's fleet-wide limits ask before a claim: a concurrency slot,
        then a rate-limit turn. Returns the slots taken (the claim may go on), or what to
        do with the message instead: a task over a limit is re-sent, delayed, to look
        again (never counting an attempt). Only a task ``queued`` and due is admitted
        here; any other goes straight to the claim, whose refusal decides (a take-over
        takes its slot in ``claim``)."""
        limits = self.engine.limits
        if limits is None:
            log.error("task type %s has fleet-wide limits but no store for them is wired", tasktype.name)
            return lifecycle.Resend(self.engine.settings.hold_seconds, "no flow-limits store")
        if message.task_id in self._admitting or self.in_flight(message.task_id):
            # Another copy of the message is being admitted, claimed or run here: a slot
            # taken for this one would be the same lease, and its release that copy's.
            return lifecycle.standby(self.engine.settings.visibility_timeout)
        self._admitting.add(message.task_id)
        try:
            task = await self.io(self.store.get, message.task_id, True)
            now = self.clock.now()
            if (
                task is None
                or task.status is not Status.QUEUED
                or task.type != tasktype.name
                or (task.run_at is not None and task.run_at > now)
            ):
                return []
            leases: list[Lease] = []
            try:
                return await self._admit(limits, task, tasktype, now, leases)
            except BaseException:
                # A store failure half way (say, the rate write after the slot): the slot
                # goes back now rather than when its lease runs out.
                await self.release(leases)
                raise
        finally:
            self._admitting.discard(message.task_id)

    async def _admit(
        self, limits: FlowLimits, task: Task, tasktype: TaskType, now: datetime, leases: list[Lease]
    ) -> list[Lease] | lifecycle.Action:
        """``admit`` for a queued, due task: the slots it takes go into ``leases``."""
        held = flow.reservation(task.waiting)
        if tasktype.fleet_concurrency is not None:
            lease = await self._acquire(limits, task, tasktype)
            if lease is None:
                return await self._wait_for_slot(task, now)
            leases.append(lease)
        rate = tasktype.rate_limit
        if rate is not None:
            key = flowkeys.key_of(task.payload, rate.key)
            start = held
            if start is None:
                start = await self.io(
                    limits.reserve_rate, tasktype.name, key, rate.interval, rate.capacity, now
                )
            turn = flow.rate_turn(start, now)
            if isinstance(turn, flow.Pause):
                await asyncio.sleep(turn.seconds)
            elif isinstance(turn, flow.Later):
                await self.release(leases)
                if held is None:
                    # The reservation is the record: when the task comes back it takes its
                    # turn without another token.
                    self.metrics.throttled.labels(type=tasktype.name, reason=WaitReason.RATE.value).inc()
                    log.debug("task %s waits for its rate-limit turn at %s", task.id, start)
                    await self.io(self.store.set_waiting, task.id, Waiting(WaitReason.RATE, start), now)
                return lifecycle.Resend(turn.delay, "waiting for its rate-limit turn")
        return leases

    async def _acquire(self, limits: FlowLimits, task: Task, tasktype: TaskType) -> Lease | None:
        """A fleet-wide concurrency slot for ``task``, or None when the limit is full."""
        limit = tasktype.fleet_concurrency
        assert limit is not None
        lease = Lease(tasktype.name, flowkeys.key_of(task.payload, limit.key), task.id)
        now = self.clock.now()
        until = now + timedelta(seconds=self.engine.settings.worker_dead_after)
        self.metrics.concurrency_limit.labels(type=tasktype.name).set(limit.max)
        answer = await self.io(
            limits.acquire_slot, lease.task_type, lease.key, lease.task_id, self.id, limit.max, now, until
        )
        if not answer.granted:
            return None
        self.metrics.slots_in_use.labels(type=tasktype.name).inc()
        return lease

    async def _wait_for_slot(self, task: Task, now: datetime) -> lifecycle.Resend:
        waited = (now - (task.run_at or task.created_at)).total_seconds()
        delay = flow.concurrency_wait(waited, self.rng.random())
        self.metrics.throttled.labels(type=task.type, reason=WaitReason.CONCURRENCY.value).inc()
        log.debug("task %s waits for a concurrency slot (%d s)", task.id, delay)
        if task.status is Status.QUEUED and flow.record_wait(task.waiting, WaitReason.CONCURRENCY):
            waiting = Waiting(WaitReason.CONCURRENCY, now + timedelta(seconds=delay))
            await self.io(self.store.set_waiting, task.id, waiting, now)
        return lifecycle.Resend(delay, "waiting for a fleet-wide concurrency slot")

    async def release(self, leases: list[Lease]) -> None:
        """Give slots back; a failure only leaves them to expire with their lease."""
        limits = self.engine.limits
        for lease in leases:
            self.metrics.slots_in_use.labels(type=lease.task_type).dec()
            if limits is None:
                continue
            try:
                await self.io(limits.release_slot, lease, self.id)
            except Exception as exc:
                log.warning(
                    "task %s: its concurrency slot was not released (%s); it expires", lease.task_id, exc
                )
        leases.clear()

    # -- the claim -----------------------------------------------------------------------------

    def in_flight(self, task_id: str) -> bool:
        """An attempt of this task is being claimed or run by this worker."""
        return task_id in self.attempts.running or task_id in self._claiming

    async def claim(
        self,
        message: Message,
        action: lifecycle.Action,
        leases: list[Lease],
        refused: Claim | None = None,
        copy: TaskCopy | None = None,
    ) -> lifecycle.Action:
        """Claim the attempt (``refused``: the answer to a claim made already; ``copy``: the
        message's copy the first claim may rest on); when the claim is refused, follow
        lifecycle's decisions on what the store holds until one is an action on the
        message (or Run). A take-over of a type with a fleet-wide concurrency limit first
        takes its slot (into ``leases``)."""
        for _ in range(3):  # a re-claim under the task's new type is the only repeat
            if not isinstance(action, lifecycle.Claim):
                break
            if refused is not None:
                claim, refused, copy = refused, None, None
            else:
                self._claiming[message.task_id] += 1
                try:
                    now = self.clock.now()
                    claim = await self.io(
                        self.store.claim, message.task_id, action.task_type, self.id, now, copy
                    )
                    copy = None
                finally:
                    self._claiming[message.task_id] -= 1
                    if not self._claiming[message.task_id]:
                        del self._claiming[message.task_id]
            if claim.task is not None:
                return lifecycle.Run(claim.task)
            action = lifecycle.on_claim_refused(
                claim.current,
                claimed_as=action.task_type,
                worker_id=self.id,
                in_flight_here=self.in_flight(message.task_id),
                now=self.clock.now(),
                visibility_timeout=self.engine.settings.visibility_timeout,
            )
        if isinstance(action, lifecycle.Claim):
            return lifecycle.Hide(1, "the task's type keeps changing; look again")
        if isinstance(action, lifecycle.CheckOwner):
            owner = await self.io(self.engine.workers.worker, action.owner)
            action = lifecycle.on_owner(
                action.task,
                owner,
                now=self.clock.now(),
                dead_after=self.engine.settings.worker_dead_after,
                visibility_timeout=self.engine.settings.visibility_timeout,
            )
        if isinstance(action, lifecycle.TakeOver):
            tasktype = self.engine.registry.get(action.task.type)
            if tasktype is not None and tasktype.fleet_concurrency is not None and self.engine.limits:
                # The dead owner's slot is this task's: free once its lease has run out.
                lease = await self._acquire(self.engine.limits, action.task, tasktype)
                if lease is None:
                    return await self._wait_for_slot(action.task, self.clock.now())
                leases.append(lease)
            taken = await self.io(self.store.take_over, action.task, self.id, self.clock.now())
            if taken is not None:
                log.warning("took over task %s from dead worker %s", taken.id, action.task.worker)
            action = lifecycle.after_take_over(taken, self.engine.settings.visibility_timeout)
        elif isinstance(action, lifecycle.Run):
            log.warning("task %s was claimed by this worker without an answer; running it", action.task.id)
            tasktype = self.engine.registry.get(action.task.type)
            if not leases and tasktype is not None and tasktype.fleet_concurrency and self.engine.limits:
                # Its slot went back when the claim's answer was lost; the attempt is this
                # worker's now, so it runs either way, but holds its slot when there is one.
                lease = await self._acquire(self.engine.limits, action.task, tasktype)
                if lease is not None:
                    leases.append(lease)
        return action

    async def do(self, message: Message, action: lifecycle.Action) -> None:
        """Carry out an action on the message itself."""
        if isinstance(action, lifecycle.Park):
            current = await self.io(self.store.get, message.task_id)
            action = lifecycle.on_parked(current, action.delay)
        match action:
            case lifecycle.Delete():
                self.deletes.add(message.receipt, message.lane)
            case lifecycle.Hide(seconds=seconds):
                queue = self.engine.lane(message.lane)
                await self.io(queue.change_visibility, message.receipt, max(1, seconds))
            case lifecycle.Resend(delay=delay):
                # The fresh copy goes on with the submit's trace, in the queue it came from.
                await self.io(
                    self.engine.lane(message.lane).send,
                    message.task_id,
                    message.task_type,
                    delay,
                    message.trace_context,
                    message.copy.task if message.copy else None,
                )
                self.deletes.add(message.receipt, message.lane)
            case lifecycle.SendNotify():
                # Sent before the delete: a crash in between leaves this message to try again.
                queue = self.engine.lane(message.lane)
                await self.io(queue.send, message.task_id, NOTIFY_TYPE, 0, message.trace_context)
                self.deletes.add(message.receipt, message.lane)
            case lifecycle.Fail(error=error):
                notify = self.engine.notifies(message.task_type)
                failed = await self.io(
                    self.store.fail_unfinished, message.task_id, error, self.clock.now(), notify
                )
                if failed is not None and failed.notify_state is NotifyState.PENDING:
                    # As after a finish: the notify message first, then the task's goes.
                    await self.io(
                        self.engine.lane(message.lane).send,
                        message.task_id,
                        NOTIFY_TYPE,
                        0,
                        message.trace_context,
                    )
                self.deletes.add(message.receipt, message.lane)
            case _:
                raise AssertionError(f"not an action on a message: {action!r}")
