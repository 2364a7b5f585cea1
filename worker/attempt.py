"""One attempt: call the handler (async on the loop, sync in a thread, both under the
TaskType's timeout), then record what conveyor.lifecycle says it came to."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from conveyor import lifecycle, logs, tracing
from conveyor.engine import Engine
from conveyor.errors import RecordTooLarge, Unavailable
from conveyor.metrics import WorkerMetrics
from conveyor.model import NOTIFY_TYPE, Message, NotifyState, Task
from conveyor.ports import BlobStore, Lease
from conveyor.registry import TaskType
from worker import handlers
from worker.deletes import DeleteBatcher
from worker.handlers.context import Context
from worker.io import BlockingCalls
from worker.progress import Reporter

log = logging.getLogger("conveyor.worker")

T = TypeVar("T")


async def call(
    fn: handlers.Handler, task: Task, context: Context, timeout: float, threads: ThreadPoolExecutor
) -> lifecycle.Outcome:
    raised: BaseException | None = None
    result: Any = None
    try:
        if inspect.iscoroutinefunction(fn):
            result = await asyncio.wait_for(fn(task.payload, context), timeout)
        else:
            # In a copy of this context: the handler's log lines and AWS calls belong to the attempt.
            run = contextvars.copy_context().run
            future = asyncio.get_running_loop().run_in_executor(threads, run, fn, task.payload, context)
            # A thread cannot be killed: on timeout the attempt fails and the thread is told
            # to stop through the cancel flag.
            try:
                result = await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                context.cancel_event.set()
                raise
    except Exception as exc:
        raised = exc
    return lifecycle.outcome_of(
        raised, result, payload=task.payload, cancelled=context.cancelled, timeout=timeout
    )


@dataclass
class Running:
    task: Task
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

    async def _run(
        self, task: Task, message: Message, tasktype: TaskType, span: Any, leases: Sequence[Lease]
    ) -> None:
        reporter = Reporter(self.store, task, self.clock)
        context = Context(
            task_id=task.id,
            task_type=task.type,
            attempt=task.attempts,
            max_attempts=task.max_attempts,
            settings=self.engine.settings,
            logger=logging.LoggerAdapter(log, {"task_id": task.id, "task_type": task.type}),
            options=dict(tasktype.options),
            blob_factory=self.blob_factory,
            store=self.store,
            reporter=reporter,
        )
        running = Running(task, message, context, leases=tuple(leases))
        self.running[task.id] = running
        labels = {"type": task.type}
        self.metrics.started.labels(**labels).inc()
        waited = (self.clock.now() - (task.run_at or task.created_at)).total_seconds()
        self.metrics.queue_wait.labels(**labels).observe(max(0.0, waited))
        self.metrics.in_progress.labels(**labels).inc()
        fn = handlers.get(tasktype.handler)
        reporter.start(self.io)
        try:
            if fn is None:
                outcome = lifecycle.handler_missing(tasktype.handler)
            else:
                outcome = await call(fn, task, context, tasktype.timeout_seconds, self._threads)
        finally:
            self.metrics.in_progress.labels(**labels).dec()
            self.metrics.duration.labels(**labels).observe(time.monotonic() - running.started)
            # Before the outcome: a progress write needs the attempt to still own the task.
            await reporter.close(self.io)
        try:
            await self._record(task, message, tasktype, outcome, span)
        finally:
            self.running.pop(task.id, None)

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
        self.metrics.finished.labels(outcome=decision.status.value, **labels).inc()
        tracing.record_outcome(span, decision.status.value, decision.error.type if decision.error else None)
        if finished is None:
            log.warning("task %s changed owner while it ran; its new owner records it", task.id)
            return
        if finished.notify_state is NotifyState.PENDING:
            # Before the task's message goes: if this worker dies first, that message comes
            # back, finds the webhook pending, and sends this (lifecycle.finished).
            await self.io(self.engine.lane(message.lane).send, task.id, NOTIFY_TYPE, 0, message.trace_context)
        self.deletes.add(message.receipt, message.lane)

    async def _finish(self, task: Task, tasktype: TaskType, decision: lifecycle.Finish) -> Task | None:
        return await self._write(
            self.store.finish,
            task,
            decision.status,
            self.clock.now(),
            decision.result,
            decision.error,
            tasktype.retention_seconds,
            bool(task.notify_url or (tasktype.notify and tasktype.notify.url)),
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
