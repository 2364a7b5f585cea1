"""One attempt: call the handler (async on the loop, sync in a thread, both under the
TaskType's timeout), then record what conveyor.lifecycle says it came to. A sync handler's
claim, run and finish share one thread (``Attempts.claim_and_run``): the loop wakes once
for the attempt, not once per blocking call."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from conveyor import lifecycle, logs, tracing
from conveyor.blocking import BlockingCalls
from conveyor.engine import Engine
from conveyor.errors import RecordTooLarge, Unavailable
from conveyor.metrics import WorkerMetrics
from conveyor.model import NOTIFY_TYPE, Message, NotifyState, Task, TaskCopy
from conveyor.ports import BlobStore, Claim, Lease
from conveyor.registry import TaskType
from worker import handlers
from worker.deletes import DeleteBatcher
from worker.handlers.context import Context
from worker.progress import Reporter

log = logging.getLogger("conveyor.worker")

T = TypeVar("T")


async def call(fn: handlers.Handler, task: Task, context: Context, timeout: float) -> lifecycle.Outcome:
    """An async handler, on the loop under its timeout (a sync one runs in
    ``Attempts._run_in_thread``)."""
    raised: BaseException | None = None
    result: Any = None
    try:
        result = await asyncio.wait_for(fn(task.payload, context), timeout)
    except Exception as exc:
        raised = exc
    return lifecycle.outcome_of(
        raised, result, payload=task.payload, cancelled=context.cancelled, timeout=timeout
    )


@dataclass
class _Hop:
    """Who records a sync handler's attempt once its timeout fires: the loop (the timeout)
    or its thread (the handler returned first and the thread is writing its outcome)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float | None = None  # the handler's start (monotonic), once claimed
    timed_out: bool = False
    recording: bool = False


@dataclass
class _Done:
    """What a sync handler's thread brings back: a refused claim, or the outcome, when the
    handler returned, and the finish it wrote (``written``) or tried (``failed``)."""

    claim: Claim | None = None
    outcome: lifecycle.Outcome | None = None
    ended: float = 0.0
    decision: lifecycle.Finish | None = None
    finished: Task | None = None
    written: bool = False
    failed: Exception | None = None


@dataclass
class Running:
    task: Task | None  # None while its claim is in flight (``claim_and_run``)
    message: Message
    context: Context
    started: float = field(default_factory=time.monotonic)
    leases: Sequence[Lease] = ()  # fleet-wide slots it holds: the heartbeat renews them


class Attempts:
    """The attempts this worker is running, keyed by task id (the heartbeat extends their
    messages and delivers their cancels)."""

    def __init__(
        self,
        engine: Engine,
        metrics: WorkerMetrics,
        io: BlockingCalls,
        deletes: DeleteBatcher,
        concurrency: int,
        blob_factory: Callable[[str | None], BlobStore] | None,
        rng: random.Random,
    ) -> None:
        self.engine, self.store, self.clock = engine, engine.store, engine.clock
        self.metrics, self.io, self.deletes = metrics, io, deletes
        self.blob_factory, self.rng = blob_factory, rng
        self.running: dict[str, Running] = {}
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="conveyor-task")

    def shutdown(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    def cancel(self, task_id: str) -> None:
        running = self.running.get(task_id)
        if running is not None:
            running.context.cancel_event.set()

    async def run(
        self, task: Task, message: Message, tasktype: TaskType, leases: Sequence[Lease] = ()
    ) -> None:
        """Run the attempt in its span (when tracing is on) and with its task id on every log
        line. ``leases``: the fleet-wide slots it holds (the caller releases them after)."""
        with (
            logs.task_context(task.id, task.type),
            tracing.attempt_span(task.id, task.type, task.attempts, message.trace_context) as span,
        ):
            await self._run(task, message, tasktype, span, leases)

    def _context(self, task_id: str, task_type: str, tasktype: TaskType) -> Context:
        """The handler's context; its attempt numbers and reporter come with the claimed task."""
        return Context(
            task_id=task_id,
            task_type=task_type,
            attempt=0,
            max_attempts=0,
            settings=self.engine.settings,
            logger=logging.LoggerAdapter(log, {"task_id": task_id, "task_type": task_type}),
            options=dict(tasktype.options),
            blob_factory=self.blob_factory,
            store=self.store,
        )

    def _begin(self, running: Running, task: Task, loop: asyncio.AbstractEventLoop) -> Reporter:
        """The attempt of the claimed ``task`` begins (from any thread)."""
        running.task = task
        context = running.context
        context.attempt, context.max_attempts = task.attempts, task.max_attempts
        reporter = context.reporter = Reporter(self.store, task, self.clock)
        reporter.start(self.io, loop)
        labels = {"type": task.type}
        self.metrics.started.labels(**labels).inc()
        waited = (self.clock.now() - (task.run_at or task.created_at)).total_seconds()
        self.metrics.queue_wait.labels(**labels).observe(max(0.0, waited))
        self.metrics.in_progress.labels(**labels).inc()
        running.started = time.monotonic()
        return reporter

    async def _run(
        self, task: Task, message: Message, tasktype: TaskType, span: Any, leases: Sequence[Lease]
    ) -> None:
        running = Running(task, message, self._context(task.id, task.type, tasktype), leases=tuple(leases))
        self.running[task.id] = running
        reporter = self._begin(running, task, asyncio.get_running_loop())
        fn = handlers.get(tasktype.handler)
        try:
            if fn is not None and not inspect.iscoroutinefunction(fn):
                await self._run_in_thread(fn, message, tasktype, running, span)
                return
            try:
                if fn is None:
                    outcome = lifecycle.handler_missing(tasktype.handler)
                else:
                    outcome = await call(fn, task, running.context, tasktype.timeout_seconds)
            finally:
                self._handler_ended(task, running, time.monotonic())
                # Before the outcome: a progress write needs the attempt to still own the task.
                await reporter.close(self.io)
            await self._record(task, message, tasktype, outcome, span)
        finally:
            self.running.pop(task.id, None)

    def runs_in_one_hop(self, tasktype: TaskType) -> bool:
        """Its attempts can be claimed, run and recorded in one thread (``claim_and_run``):
        a sync handler, and no span to open on the loop around them."""
        fn = handlers.get(tasktype.handler)
        return fn is not None and not inspect.iscoroutinefunction(fn) and not tracing.enabled()

    async def claim_and_run(
        self,
        message: Message,
        task_type: str,
        tasktype: TaskType,
        worker_id: str,
        copy: TaskCopy | None = None,
    ) -> Claim | None:
        """Claim the attempt and, when the claim is granted, run its sync handler and record
        the outcome, all in one thread: the floor's path, one wake-up of the loop per
        attempt. Returns the refused claim (nothing ran), for the caller to follow up; None
        once the attempt ran. While the claim is in flight the attempt counts as running
        here, so another copy of the message sees it in flight."""
        fn = handlers.get(tasktype.handler)
        assert fn is not None
        running = Running(None, message, self._context(message.task_id, task_type, tasktype))
        self.running[message.task_id] = running
        try:
            with logs.task_context(message.task_id, task_type):
                return await self._run_in_thread(
                    fn, message, tasktype, running, None, (task_type, worker_id, copy)
                )
        finally:
            self.running.pop(message.task_id, None)

    def _handler_ended(self, task: Task, running: Running, ended: float) -> None:
        labels = {"type": task.type}
        self.metrics.in_progress.labels(**labels).dec()
        self.metrics.duration.labels(**labels).observe(ended - running.started)

    async def _run_in_thread(
        self,
        fn: handlers.Handler,
        message: Message,
        tasktype: TaskType,
        running: Running,
        span: Any,
        claim: tuple[str, str, TaskCopy | None] | None = None,
    ) -> Claim | None:
        """A sync handler and, when it can, the write of its outcome, in one thread (with
        ``claim``, (task type, worker id, message's copy), the claim first): each hop back to the loop costs
        a wake-up, and most attempts end in a plain finish. Anything else (a retry, a
        progress write still owed, a failed write, a timeout) is recorded from the loop, as
        for an async handler. Returns a refused claim."""
        context = running.context
        timeout = tasktype.timeout_seconds
        loop = asyncio.get_running_loop()
        hop = _Hop()

        def work() -> _Done:
            if claim is None:
                assert running.task is not None and context.reporter is not None
                task, reporter = running.task, context.reporter
            else:
                answer = self.store.claim(message.task_id, claim[0], claim[1], self.clock.now(), claim[2])
                if answer.task is None:
                    return _Done(claim=answer)
                task = answer.task
                reporter = self._begin(running, task, loop)
            hop.started = running.started
            raised: Exception | None = None
            result: Any = None
            try:
                result = fn(task.payload, context)
            except Exception as exc:
                raised = exc
            outcome = lifecycle.outcome_of(
                raised, result, payload=task.payload, cancelled=context.cancelled, timeout=timeout
            )
            done = _Done(outcome=outcome, ended=time.monotonic())
            with hop.lock:
                if hop.timed_out:
                    return done  # the loop recorded the timeout; this result is dropped
                hop.recording = True
            if not reporter.close_quiet():
                return done  # the last progress is written first, from the loop
            decision = lifecycle.on_outcome(
                task, outcome, tasktype, now=self.clock.now(), jitter=self.rng.random()
            )
            if not isinstance(decision, lifecycle.Finish):
                return done
            done.decision = decision
            try:
                done.finished = self.store.finish(
                    task,
                    decision.status,
                    self.clock.now(),
                    decision.result,
                    decision.error,
                    tasktype.retention_seconds,
                    self._notifies(task, tasktype),
                )
                done.written = True
            except Exception as exc:
                done.failed = exc
            return done

        # In a copy of this context: the handler's log lines and AWS calls belong to the attempt.
        future = loop.run_in_executor(self._threads, contextvars.copy_context().run, work)
        ended: float | None = None
        try:
            left: float = timeout
            while True:
                try:
                    done = await asyncio.wait_for(asyncio.shield(future), left)
                    break
                except TimeoutError:
                    # The handler's time runs from its start, not from the claim before it.
                    started = hop.started
                    left = timeout if started is None else started + timeout - time.monotonic()
                    if left > 0:
                        continue
                with hop.lock:
                    hop.timed_out = not hop.recording
                if hop.timed_out:
                    # A thread cannot be killed: it is told to stop through the cancel flag.
                    context.cancel_event.set()
                    outcome = lifecycle.outcome_of(
                        TimeoutError(), None, payload=None, cancelled=False, timeout=timeout
                    )
                    done = _Done(outcome=outcome, ended=time.monotonic())
                else:
                    done = await future  # the handler returned in time; its outcome is being written
                break
            if done.claim is not None:
                return done.claim
            ended = done.ended
        finally:
            if hop.started is not None:
                assert running.task is not None
                self._handler_ended(running.task, running, ended or time.monotonic())
        task, reporter = running.task, context.reporter
        assert task is not None and reporter is not None and done.outcome is not None
        await reporter.close(self.io)  # nothing to do unless it reported
        if done.decision is None:
            await self._record(task, message, tasktype, done.outcome, span)
            return None
        decision, finished = done.decision, done.finished
        if not done.written:
            if isinstance(done.failed, RecordTooLarge):
                log.error("task %s: finished record refused for its size (%s)", task.id, done.failed)
                decision = lifecycle.RESULT_REFUSED
            elif not isinstance(done.failed, Unavailable):
                assert done.failed is not None
                raise done.failed
            finished = await self._finish(task, tasktype, decision)
        self._finished(task, decision, span)
        await self._after_finish(task, message, finished)
        return None

    async def _record(
        self, task: Task, message: Message, tasktype: TaskType, outcome: lifecycle.Outcome, span: Any = None
    ) -> None:
        decision = lifecycle.on_outcome(
            task, outcome, tasktype, now=self.clock.now(), jitter=self.rng.random()
        )
        labels = {"type": task.type}
        if isinstance(decision, lifecycle.Requeue):
            requeued = await self._write(
                self.store.requeue, task, decision.run_at, decision.error, self.clock.now()
            )
            self.metrics.finished.labels(outcome="retried", **labels).inc()
            tracing.record_outcome(span, "retried", decision.error.type)
            if requeued:
                queue = self.engine.lane(message.lane)
                await self.io(queue.change_visibility, message.receipt, decision.hide)
            return
        try:
            finished = await self._finish(task, tasktype, decision)
        except RecordTooLarge as exc:
            log.error("task %s: finished record refused for its size (%s)", task.id, exc)
            decision = lifecycle.RESULT_REFUSED
            finished = await self._finish(task, tasktype, decision)
        self._finished(task, decision, span)
        await self._after_finish(task, message, finished)

    def _finished(self, task: Task, decision: lifecycle.Finish, span: Any) -> None:
        self.metrics.finished.labels(outcome=decision.status.value, type=task.type).inc()
        tracing.record_outcome(span, decision.status.value, decision.error.type if decision.error else None)

    async def _after_finish(self, task: Task, message: Message, finished: Task | None) -> None:
        if finished is None:
            log.warning("task %s changed owner while it ran; its new owner records it", task.id)
            return
        if finished.notify_state is NotifyState.PENDING:
            # Before the task's message goes: if this worker dies first, that message comes
            # back, finds the webhook pending, and sends this (lifecycle.finished).
            await self.io(self.engine.lane(message.lane).send, task.id, NOTIFY_TYPE, 0, message.trace_context)
        self.deletes.add(message.receipt, message.lane)

    @staticmethod
    def _notifies(task: Task, tasktype: TaskType) -> bool:
        return bool(task.notify_url or (tasktype.notify and tasktype.notify.url))

    async def _finish(self, task: Task, tasktype: TaskType, decision: lifecycle.Finish) -> Task | None:
        return await self._write(
            self.store.finish,
            task,
            decision.status,
            self.clock.now(),
            decision.result,
            decision.error,
            tasktype.retention_seconds,
            self._notifies(task, tasktype),
        )

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Record a known outcome, retrying through throttling and outages. Giving up would
        leave the task ``running`` under a live worker (never taken over), and running the
        handler again would repeat its side effects. Meanwhile the heartbeat keeps the
        message hidden (the task is still in ``running``)."""
        delay = 0.5
        while True:
            try:
                return await self.io(fn, *args)
            except Unavailable as exc:
                log.warning("recording an outcome failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
