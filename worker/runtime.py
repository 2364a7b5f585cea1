"""The worker: the I/O around conveyor.lifecycle's decisions. It receives only for free
slots, asks lifecycle what each message means, does that, runs handlers, heartbeats, and
shuts down cleanly.

Invariants this module keeps (each has a test in tests/worker/):
- A message is deleted only when its task is terminal (or gone). A message for a task
  that is running elsewhere is hidden again, as a standby copy, never deleted: if that
  other worker dies, the copy comes back and the task is taken over.
- The handler runs only after a conditional claim in the store, so two deliveries of one
  attempt never both run it.
- While a handler runs its message's visibility is extended every heartbeat, so it is
  never redelivered underneath the handler however long it runs.
- On stop, nothing received and not yet started is kept: it is made visible at once.
- A type's fleet-wide limits (a concurrency slot, a rate-limit turn) are taken before
  the claim and the slot given back once the attempt is recorded or the claim refused;
  a task over a limit is re-sent delayed, never counting an attempt (tests/flow/).

Recorded times and every decision use the engine's clock; the waits of the loop itself
(long polls, gather windows, heartbeats, the shutdown grace) are real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from conveyor import lanes, lifecycle
from conveyor.blocking import BlockingCalls
from conveyor.engine import Engine
from conveyor.errors import ConveyorError
from conveyor.metrics import WorkerMetrics
from conveyor.model import Message, Priority
from conveyor.ports import BlobStore, Claim, Lease
from worker.attempt import Attempts
from worker.deletes import GATHER_SECONDS, DeleteBatcher
from worker.heartbeat import Heartbeat
from worker.io import wait_for_event
from worker.messages import Messages
from worker.notify import Notifier

log = logging.getLogger("conveyor.worker")

T = TypeVar("T")

# Under a backlog a receive waits up to this long for three quarters of the slots to be
# free, so it brings a fuller batch; an idle worker's long poll is never delayed.
RECEIVE_GATHER_SECONDS = 0.05


class Worker:
    def __init__(
        self,
        engine: Engine,
        metrics: WorkerMetrics,
        blob_factory: Callable[[str | None], BlobStore] | None = None,
        worker_id: str | None = None,
        rng: random.Random | None = None,
        delete_gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self.engine, self.settings, self.clock = engine, engine.settings, engine.clock
        self.store = engine.store
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.concurrency = max(1, self.settings.worker_concurrency)
        self.host = socket.gethostname()
        self.id = worker_id or f"{self.host}-{os.getpid()}-{random.randbytes(2).hex()}"
        self.io = BlockingCalls(self.concurrency + 8)
        self.deletes = DeleteBatcher(
            lambda lane, batch: self.io(self.engine.lane(lane).delete_many, batch), delete_gather_seconds
        )
        self.attempts = Attempts(
            engine, metrics, self.io, self.deletes, self.concurrency, blob_factory, self.rng
        )
        self.notifier = Notifier(engine, self.io, self.deletes, self.rng)
        self.messages = Messages(engine, self.io, self.deletes, self.attempts, self.id, metrics, self.rng)
        self.heartbeat = Heartbeat(engine, self.io, self.attempts, self.id, self.host, self.concurrency)
        self.held = 0  # slots taken: messages in hand plus those a receive asks for
        self._asking = 0  # slots reserved by the receive in flight
        self._received = 0  # in all; bounded by settings.worker_max_tasks in one-shot mode
        self._type_slots: Counter[str] = Counter()  # per TaskType: claimed or about to be
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_free = asyncio.Event()
        self._stop = asyncio.Event()
        # Priority levels: each distinct queue once; every one is tried at start.
        self.picker = lanes.WeightedPicker(lanes.parse_weights(self.settings.priority_weights))
        self._queues = engine.queues()
        self._has_work: set[Priority] = {lane for lane, _ in self._queues}  # believed, not known
        self._long: dict[Priority, asyncio.Future[list[Message]]] = {}  # long polls in flight
        self._retry_at: dict[Priority, float] = {}  # a level whose long poll failed waits till then
        self._backoff = 0.5  # after a failed receive, growing while they keep failing
        self._retry_until = 0.0
        self._empty_polls: set[Priority] = set()  # long polls back empty since the last message
        self._receiving = False
        self.metrics.concurrency.set(self.concurrency)

    def _release_slot(self) -> None:
        self.held -= 1
        self.metrics.busy.set(self.held)
        self._slot_free.set()

    @property
    def in_hand(self) -> int:
        """Messages received and not yet done with. Read from any thread: the two counts
        move in an order that can only make it read high, never low."""
        return self.held - self._asking

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Stop receiving; running handlers finish within the grace period."""
        self._stop.set()
        self._slot_free.set()
        self.deletes.closing()

    # -- main loop ----------------------------------------------------------------------

    async def run(self) -> None:
        loops = [
            asyncio.create_task(self.heartbeat.run(), name="heartbeat"),
            asyncio.create_task(self.deletes.run(), name="deletes"),
        ]
        await self.heartbeat.beat()
        log.info("worker %s started: concurrency %d", self.id, self.concurrency)
        try:
            await self._receive_loop()
        finally:
            await self._drain()
            self.deletes.closing()
            loops[0].cancel()
            # The delete loop ends by itself once closing and empty: nothing pending is lost.
            await asyncio.gather(*loops, return_exceptions=True)
            await self.deletes.flush()
            with contextlib.suppress(Exception):
                await self.heartbeat.stop()
            self.io.shutdown()
            self.attempts.shutdown()
            log.info("worker %s stopped", self.id)

    def _free(self) -> int:
        return self.concurrency - self.held

    @property
    def polling(self) -> bool:
        """A long poll is waiting on some queue (the worker is idle there)."""
        return bool(self._long)

    @property
    def long_polled(self) -> frozenset[Priority]:
        """The levels a long poll is waiting on now."""
        return frozenset(self._long)

    async def _receive_loop(self) -> None:
        """Receive for free slots, from the priority levels' queues.

        A level believed to have work (``_has_work``) is received from with a short poll,
        the level picked by weight among those (conveyor/lanes.py). A level whose receive
        came back empty gets a long poll of its own instead, which returns the moment a message arrives
        there: an idle worker makes one receive per queue per ``poll_wait_seconds`` (with
        20 s and three queues, 9 a minute), and a high task arriving during a low backlog
        is seen at once and received with the next free slot.
        """
        self._receiving = True
        try:
            await self._receive_rounds()
        finally:
            self._receiving = False
            for lane, poll in self._long.items():
                # Abandoned: what it brings goes straight back.
                poll.add_done_callback(functools.partial(self._hand_back, lane))
            self._long.clear()

    async def _receive_rounds(self) -> None:
        backlog = False  # the last receive brought all it asked for: more are waiting
        gather = min(10, math.ceil(self.concurrency * 3 / 4))
        limit = self.settings.worker_max_tasks
        while not self._stop.is_set():
            if await self._collect_long_polls():
                log.info("one-shot worker: every queue empty, exiting when done")
                break
            self._start_long_polls()  # after the collect: a level whose poll just came back is watched again
            if limit and self._received >= limit:
                log.info("one-shot worker: %d message(s) received, exiting when done", self._received)
                break
            if self._free() <= 0 or not self._has_work:
                await self._wait_for_activity()
                continue
            if backlog and self._free() < gather:
                await self._wait_for_slots(gather)
                if self._stop.is_set():
                    break
            lane = self.picker.pick(self._has_work)
            assert lane is not None
            # Reserve the slots before asking, so prefetch never exceeds free capacity.
            want = min(10, self._free(), limit - self._received if limit else 10)
            self.held += want
            self._asking = want
            try:
                messages = await self.io(self._poll, lane, want, 0)
                self._backoff = 0.5
            except ConveyorError as exc:
                self._asking = 0
                self.held -= want
                await wait_for_event(self._stop, self._failed(exc))
                continue
            self._asking = 0
            self.held -= want - len(messages)
            if not messages:
                # Drained: a long poll watches it from now on. Not on a short answer: SQS's
                # short poll samples a subset of its servers and may bring fewer than wait.
                self._has_work.discard(lane)
            backlog = len(messages) == want
            self.metrics.busy.set(self.held)
            if self._stop.is_set():
                try:
                    await self._release(messages)
                finally:
                    self.held -= len(messages)
                break
            self._dispatch(messages)

    def _dispatch(self, messages: list[Message]) -> None:
        """Process received messages, whose slots are taken already."""
        for message in messages:
            task = asyncio.get_running_loop().create_task(self._process(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._received += len(messages)
        if messages:
            self._empty_polls.clear()

    def _failed(self, exc: Exception) -> float:
        """Seconds to wait after a failed receive. One backoff for every queue, growing
        once per outage wave: the queues' polls fail together when SQS is unreachable, and
        each then waits for the same retry time rather than tripling the growth."""
        now = time.monotonic()
        if self._retry_until > now:
            return self._retry_until - now
        backoff = self._backoff
        self._backoff = min(backoff * 2, 15.0)
        self._retry_until = now + backoff
        log.warning("receive failed (%s); retrying in %.1fs", exc, backoff)
        return backoff

    def _start_long_polls(self) -> None:
        now = time.monotonic()
        for lane, _ in self._queues:
            if lane in self._has_work or lane in self._long or self._retry_at.get(lane, 0.0) > now:
                continue
            wait = self.settings.poll_wait_seconds
            # For the free slots (at least one, to see the level has work): what comes beyond
            # them goes back at a send and a delete each.
            want = min(10, max(1, self._free()))
            self._long[lane] = self.io.start(self._poll, lane, want, wait)

    async def _collect_long_polls(self) -> bool:
        """Take in what finished long polls brought: as many as there are free slots, the
        rest handed back at once (their level is then polled by weight). True when a
        one-shot worker found every queue empty."""
        limit = self.settings.worker_max_tasks
        for lane, poll in list(self._long.items()):
            if not poll.done():
                continue
            del self._long[lane]
            try:
                messages = poll.result()
            except Exception as exc:
                self._retry_at[lane] = time.monotonic() + self._failed(exc)
                continue
            self._backoff = 0.5
            if not messages:
                self._empty_polls.add(lane)
                continue
            self._has_work.add(lane)
            room = max(0, min(self._free(), limit - self._received if limit else self._free()))
            take, extra = messages[:room], messages[room:]
            if self._stop.is_set():
                take, extra = [], messages
            self.held += len(take)
            self.metrics.busy.set(self.held)
            self._dispatch(take)
            if extra:
                await self._return(extra)
        every = {lane for lane, _ in self._queues}
        return bool(limit) and not self._has_work and self._empty_polls >= every

    async def _wait_for_activity(self) -> None:
        """Wait for a free slot (when the worker has work in sight), a long poll's answer,
        a failed long poll's retry time, or the stop."""
        helpers: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._stop.wait())]
        if self._free() <= 0:
            self._slot_free.clear()
            helpers.append(asyncio.ensure_future(self._slot_free.wait()))
        timeout = None
        if self._retry_at:
            timeout = max(0.0, min(self._retry_at.values()) - time.monotonic())
        try:
            await asyncio.wait(
                {*helpers, *self._long.values()}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for helper in helpers:
                helper.cancel()
        now = time.monotonic()
        self._retry_at = {lane: at for lane, at in self._retry_at.items() if at > now}

    def _poll(self, lane: Priority, want: int, wait: int) -> list[Message]:
        """One receive, in an I/O thread. If the worker stopped receiving meanwhile, the
        loop is no longer waiting for it: what it brought goes straight back from here."""
        broker = self.engine.lane(lane)
        messages = broker.receive(want, wait)
        if messages and (self.stopping or not self._receiving):
            broker.change_visibility_many([(m.receipt, 0) for m in messages])
            return []
        return messages

    def _hand_back(self, lane: Priority, poll: asyncio.Future[list[Message]]) -> None:
        """An abandoned poll that returned messages just before it saw the stop."""
        if not poll.cancelled() and poll.exception() is None and poll.result():
            with contextlib.suppress(Exception):
                self.engine.lane(lane).change_visibility_many([(m.receipt, 0) for m in poll.result()])

    async def _wait_for_slots(self, gather: int) -> None:
        """Wait until ``gather`` slots are free (or a stop), at most RECEIVE_GATHER_SECONDS."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECEIVE_GATHER_SECONDS
        while self._free() < gather and not self.stopping and (left := deadline - loop.time()) > 0:
            self._slot_free.clear()
            await wait_for_event(self._slot_free, left)

    async def _release(self, messages: list[Message]) -> None:
        """Hand messages back at once (visibility 0), for another worker to take."""
        by_lane: dict[Priority, list[tuple[str, int]]] = {}
        for m in messages:
            by_lane.setdefault(m.lane, []).append((m.receipt, 0))
        for lane, items in by_lane.items():
            await self.io(self.engine.lane(lane).change_visibility_many, items)

    async def _return(self, messages: list[Message]) -> None:
        """Put back what a long poll brought beyond the free slots as fresh copies, not by
        visibility 0: every busy worker long-polling a quiet level may take a new message
        once, and each take would add to its receive count until, in a large fleet, it
        reached the dead-letter queue without ever being tried. Sent before the delete, so
        a crash in between leaves a duplicate (harmless), never nothing."""
        for m in messages:
            try:
                copy = m.copy.task if m.copy else None
                await self.io(self.engine.lane(m.lane).send, m.task_id, m.task_type, 0, m.trace_context, copy)
            except ConveyorError:
                with contextlib.suppress(ConveyorError):  # else its visibility timeout returns it
                    await self.io(self.engine.lane(m.lane).change_visibility, m.receipt, 0)
                continue
            self.deletes.add(m.receipt, m.lane)

    async def _drain(self) -> None:
        """Let running handlers finish within the grace period; then hand back the rest."""
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
        if self.attempts.running:
            log.warning("grace period over: cancelling %d running task(s)", len(self.attempts.running))
            for task_id in list(self.attempts.running):
                self.attempts.cancel(task_id)
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2.0)

    # -- one message: lifecycle decides, this does ----------------------------------------

    async def _process(self, message: Message) -> None:
        try:
            if self.stopping:
                await self._release([message])
            else:
                await self._handle(message)
        except Exception:
            log.exception("error handling task %s; its message will come back", message.task_id)
        finally:
            self._release_slot()

    async def _handle(self, message: Message) -> None:
        registry = self.engine.registry
        tasktype = registry.get(message.task_type)
        action = lifecycle.on_delivery(
            message,
            tasktype,
            registry_size=len(registry),
            slots_in_use=self._type_slots[message.task_type],
            hold_seconds=self.settings.hold_seconds,
            jitter=self.rng.random(),
        )
        if isinstance(action, lifecycle.Deliver):
            await self.notifier.handle(message)
            return
        if not isinstance(action, lifecycle.Claim):
            await self.messages.do(message, action)
            return
        assert tasktype is not None
        # Taken before the claim's await: messages of one batch run this concurrently, and
        # counting only running tasks would let them all past the check.
        self._type_slots[tasktype.name] += 1
        leases: list[Lease] = []  # fleet-wide slots taken for this task, released at the end
        try:
            refused: Claim | None = None
            copy = None  # a type with fleet-wide limits reads its record first, then claims by id
            if tasktype.fleet_concurrency is not None or tasktype.rate_limit is not None:
                admitted = await self.messages.admit(message, tasktype)
                if not isinstance(admitted, list):
                    await self.messages.do(message, admitted)
                    return
                leases = admitted
            else:
                copy = lifecycle.claim_copy(message, action.task_type, self.clock.now())
                if self.attempts.runs_in_one_hop(tasktype) and not self.messages.in_flight(message.task_id):
                    # The common case, as the floor runs it: claim, handler and finish in one
                    # thread. Only a refused claim comes back here, to be followed up below.
                    refused = await self.attempts.claim_and_run(
                        message, action.task_type, tasktype, self.id, copy
                    )
                    if refused is None:
                        return
            action = await self.messages.claim(message, action, leases, refused, copy)
            if isinstance(action, lifecycle.Run):
                await self.attempts.run(
                    action.task, message, self.engine.registry.get(action.task.type) or tasktype, leases
                )
            else:
                await self.messages.do(message, action)
        finally:
            self._type_slots[tasktype.name] -= 1
            # After the finish, requeue or lost attempt was recorded, and on a refused claim.
            await self.messages.release(leases)
