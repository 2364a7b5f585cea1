"""One delivered message, after its first look: the claim and what the store's answers
lead to (conveyor.lifecycle decides each step), and the actions on the message itself."""

from __future__ import annotations

import logging
from collections import Counter

from conveyor import lifecycle
from conveyor.engine import Engine
from conveyor.model import NOTIFY_TYPE, Message, NotifyState
from worker.attempt import Attempts
from worker.deletes import DeleteBatcher
from worker.io import BlockingCalls

log = logging.getLogger("conveyor.worker")


class Messages:
    def __init__(
        self, engine: Engine, io: BlockingCalls, deletes: DeleteBatcher, attempts: Attempts, worker_id: str
    ) -> None:
        self.engine, self.io, self.deletes, self.attempts = engine, io, deletes, attempts
        self.store, self.clock = engine.store, engine.clock
        self.id = worker_id
        self._claiming: Counter[str] = Counter()  # task ids with a claim call in flight

    async def claim(self, message: Message, action: lifecycle.Action) -> lifecycle.Action:
        """Claim the attempt; when the claim is refused, follow lifecycle's decisions on what
        the store holds until one is an action on the message (or Run)."""
        for _ in range(3):  # a re-claim under the task's new type is the only repeat
            if not isinstance(action, lifecycle.Claim):
                break
            self._claiming[message.task_id] += 1
            try:
                claim = await self.io(
                    self.store.claim, message.task_id, action.task_type, self.id, self.clock.now()
                )
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
                in_flight_here=message.task_id in self.attempts.running or message.task_id in self._claiming,
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
            taken = await self.io(self.store.take_over, action.task, self.id, self.clock.now())
            if taken is not None:
                log.warning("took over task %s from dead worker %s", taken.id, action.task.worker)
            action = lifecycle.after_take_over(taken, self.engine.settings.visibility_timeout)
        elif isinstance(action, lifecycle.Run):
            log.warning("task %s was claimed by this worker without an answer; running it", action.task.id)
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
