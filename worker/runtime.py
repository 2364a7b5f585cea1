"""The worker loop: receive only for free slots, claim, run, heartbeat, finish, shut down.

Invariants this module keeps (each has a test in tests/worker/):
- A message is deleted only when its task is terminal (or gone). A message for a task
  that is running elsewhere is hidden again, as a standby copy, never deleted: if that
  other worker dies, the copy comes back and the task is taken over.
- The handler runs only after a conditional claim in DynamoDB, so two deliveries of one
  attempt never both run it.
- While a handler runs its message's visibility is extended every heartbeat, so it is
  never redelivered underneath the handler however long it runs.
- On stop, nothing received and not yet started is kept: it is made visible at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from conveyor import __version__
from conveyor.engine import Engine, backoff_seconds, checked_result
from conveyor.errors import ConveyorError, PermanentError, RecordTooLarge, TaskCancelled, Unavailable
from conveyor.metrics import WorkerMetrics
from conveyor.model import Message, Status, Task, TaskError, WorkerInfo, now
from conveyor.ports import BlobStore
from conveyor.registry import TaskType
from worker import handlers
from worker.handlers.context import Context

log = logging.getLogger("conveyor.worker")

T = TypeVar("T")

MAX_VISIBILITY = 12 * 3600 - 300  # SQS: at most 12 h since receipt, with a margin
# Batching, which sets SQS requests per task. Under a backlog, a receive waits up to
# RECEIVE_GATHER_SECONDS for three quarters of the slots to be free, so it brings a
# fuller batch; an idle worker's long poll is never delayed. A finished task's message
# is deleted within DELETE_GATHER_SECONDS, ten at a time: it stays hidden meanwhile (the
# visibility timeout is far longer), and one that comes back anyway finds its task
# terminal and is deleted on sight.
RECEIVE_GATHER_SECONDS = 0.05
DELETE_GATHER_SECONDS = 1.0


@dataclass
class Running:
    task: Task
    message: Message
    context: Context
    started: float = field(default_factory=time.monotonic)


class Worker:
    def __init__(
        self,
        engine: Engine,
        metrics: WorkerMetrics,
        blob_factory: Callable[[str | None], BlobStore] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.store = engine.store
        self.broker = engine.broker
        self.metrics = metrics
        self.blob_factory = blob_factory
        self.concurrency = max(1, self.settings.worker_concurrency)
        host = socket.gethostname()
        self.id = worker_id or f"{host}-{os.getpid()}-{random.randbytes(2).hex()}"
        self.host = host
        self.started_at = now()
        # AWS calls block; they get a pool of their own so handlers cannot starve them.
        self._io = ThreadPoolExecutor(self.concurrency + 8, thread_name_prefix="conveyor-io")
        self._handlers = ThreadPoolExecutor(self.concurrency, thread_name_prefix="conveyor-task")
        self._held = 0  # messages received and not yet done with: never above concurrency
        self._received = 0  # in all; bounded by settings.worker_max_tasks in one-shot mode
        self._running: dict[str, Running] = {}
        self._claiming: Counter[str] = Counter()  # task ids with a claim call in flight
        self._type_slots: dict[str, int] = {}  # per TaskType: claimed or about to be
        self._tasks: set[asyncio.Task[Any]] = set()
        self._slot_free: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._deletes: list[str] = []
        self._delete_wakeup: asyncio.Event | None = None
        self.metrics.concurrency.set(self.concurrency)

    # -- plumbing -----------------------------------------------------------------------

    async def _io_call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release_slot(self) -> None:
        self._held -= 1
        self.metrics.busy.set(self._held)
        if self._slot_free is not None:
            self._slot_free.set()

    @property
    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def request_stop(self) -> None:
        """Stop receiving; running handlers finish within the grace period."""
        if self._stop is not None:
            self._stop.set()
        if self._slot_free is not None:
            self._slot_free.set()

    # -- main loop ----------------------------------------------------------------------

    async def run(self) -> None:
        self._stop = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._delete_wakeup = asyncio.Event()
        loops = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._delete_loop(), name="deletes"),
        ]
        await self._beat()
        log.info("worker %s started: concurrency %d", self.id, self.concurrency)
        try:
            await self._receive_loop()
        finally:
            await self._drain()
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._flush_deletes()
            with contextlib.suppress(Exception):
                await self._io_call(self.engine.workers.remove_worker, self.id)
            self._io.shutdown(wait=False, cancel_futures=True)
            self._handlers.shutdown(wait=False, cancel_futures=True)
            log.info("worker %s stopped", self.id)

    async def _receive_loop(self) -> None:
        assert self._stop is not None and self._slot_free is not None
        backoff = 0.5
        backlog = False  # the last receive brought all it asked for: more are waiting
        gather = min(10, math.ceil(self.concurrency * 3 / 4))
        while not self._stop.is_set():
            free = self.concurrency - self._held
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            if backlog and free < gather:
                await self._wait_until(
                    self._slot_free,
                    lambda: self.concurrency - self._held >= gather or self.stopping,
                    RECEIVE_GATHER_SECONDS,
                )
                if self._stop.is_set():
                    break
                free = self.concurrency - self._held
            # Reserve the slots before asking, so prefetch never exceeds free capacity.
            want = min(10, free)
            if self.settings.worker_max_tasks:
                want = min(want, self.settings.worker_max_tasks - self._received)
            self._held += want
            try:
                messages = await self._io_call(self.broker.receive, want, self.settings.poll_wait_seconds)
                backoff = 0.5
            except ConveyorError as exc:
                self._held -= want
                log.warning("receive failed (%s); retrying in %.1fs", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                backoff = min(backoff * 2, 15.0)
                continue
            self._held -= want - len(messages)
            backlog = len(messages) == want
            self.metrics.busy.set(self._held)
            if self._stop.is_set():
                try:
                    await self._release(messages)
                finally:
                    self._held -= len(messages)
                break
            for message in messages:
                self._spawn(self._process(message))
            self._received += len(messages)
            limit = self.settings.worker_max_tasks
            if limit and (not messages or self._received >= limit):
                # One-shot (a KEDA ScaledJob's pod): stop receiving, run what was received
                # (the drain waits for it), then exit. Not a stop: that would hand it back.
                log.info("one-shot worker: %d message(s) received, exiting when done", self._received)
                break

    @staticmethod
    async def _wait_until(event: asyncio.Event, done: Callable[[], bool], seconds: float) -> None:
        """Wait until ``done()`` (checked again each time ``event`` is set), at most ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not done() and (left := deadline - loop.time()) > 0:
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), left)

    async def _release(self, messages: list[Message]) -> None:
        """Hand messages back at once (visibility 0), for another worker to take."""
        if not messages:
            return
        await self._io_call(self.broker.change_visibility_many, [(m.receipt, 0) for m in messages])

    async def _drain(self) -> None:
        """Let running handlers finish within the grace period; then hand back the rest."""
        grace = self.settings.shutdown_grace_seconds
        deadline = time.monotonic() + grace
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
        if self._running:
            log.warning("grace period over: cancelling %d running task(s)", len(self._running))
            for running in list(self._running.values()):
                running.context.cancel_event.set()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2.0)

    # -- one message --------------------------------------------------------------------

    async def _process(self, message: Message) -> None:
        try:
            await self._handle_message(message)
        except Exception:
            log.exception("error handling task %s; its message will come back", message.task_id)
        finally:
            self._release_slot()

    async def _handle_message(self, message: Message) -> None:
        if self.stopping:
            await self._release([message])
            return
        if not message.task_id:
            log.error("deleting a message that is not a Conveyor task message")
            self._delete(message)
            return
        registry = self.engine.registry
        tasktype = registry.get(message.task_type)
        if tasktype is None:
            if len(registry) == 0:
                # No registry yet (ConfigMap not mounted?): failing every task would be
                # wrong; wait for it.
                await self._hide(message, self.settings.hold_seconds)
                return
            await self._io_call(
                self.store.fail_unfinished,
                message.task_id,
                TaskError(
                    "UnknownTaskType",
                    f"task type {message.task_type!r} no longer exists (its TaskType was deleted)",
                ),
                now(),
            )
            self._delete(message)
            return
        if tasktype.paused or not tasktype.runnable:
            await self._hold(message)
            return
        if tasktype.concurrency and self._type_slots.get(tasktype.name, 0) >= tasktype.concurrency:
            # Re-sent rather than re-hidden: a long saturation must not add up receives
            # and push the message into the dead-letter queue.
            await self._resend(message, 1 + int(random.random() * 3))
            return
        # Taken before the claim's await: messages of one batch run this concurrently, and
        # counting only running tasks would let them all past the check.
        self._type_slots[tasktype.name] = self._type_slots.get(tasktype.name, 0) + 1
        try:
            self._claiming[message.task_id] += 1
            try:
                claim = await self._io_call(
                    self.store.claim, message.task_id, message.task_type, self.id, now()
                )
            finally:
                self._claiming[message.task_id] -= 1
                if not self._claiming[message.task_id]:
                    del self._claiming[message.task_id]
            task = claim.task
            if task is None:
                task = await self._not_claimed(message, claim.current)
                if task is None:
                    return
            await self._run(task, message, tasktype)
        finally:
            self._type_slots[tasktype.name] -= 1

    async def _hide(self, message: Message, seconds: float) -> None:
        await self._io_call(self.broker.change_visibility, message.receipt, math.ceil(max(1.0, seconds)))

    async def _resend(self, message: Message, delay: int) -> None:
        """Replace the message with a fresh copy due in ``delay`` s (receive count 0)."""
        await self._io_call(self.broker.send, message.task_id, message.task_type, delay)
        self._delete(message)

    async def _hold(self, message: Message) -> None:
        """Park a message of a paused or disabled type without counting an attempt.

        Re-sending (not re-hiding) keeps the receive count low, so a long pause never
        pushes healthy messages into the dead-letter queue."""
        current = await self._io_call(self.store.get, message.task_id)
        if current is not None and not current.status.terminal:
            await self._resend(message, self.settings.hold_seconds)
        else:
            self._delete(message)

    async def _not_claimed(self, message: Message, current: Task | None) -> Task | None:
        """The claim failed: decide what this delivery means. Returns a task to run when
        this worker took over an attempt whose worker died."""
        if current is None or current.status.terminal:
            self._delete(message)
            return None
        if current.status is Status.QUEUED:
            if current.type != message.task_type:
                retry = await self._io_call(self.store.claim, current.id, current.type, self.id, now())
                if retry.task is not None:
                    return retry.task
            if current.run_at is not None and current.run_at > now():
                # Delayed (or backing off): hide until it is due. Not an attempt.
                wait = (current.run_at - now()).total_seconds()
                await self._hide(message, min(MAX_VISIBILITY, wait + 0.5))
                return None
            await self._hide(message, 1)
            return None
        # Running: under another worker (or this one, via a duplicate delivery).
        if current.worker == self.id and current.id not in self._running and not self._claiming[current.id]:
            # Ours, yet not running here: our claim (or take-over) took effect but its answer
            # was lost and botocore's retry then failed the condition. Run it, or nobody will.
            log.warning("task %s was claimed by this worker without an answer; running it", current.id)
            return current
        if current.worker != self.id and current.worker:
            owner = await self._io_call(self.engine.workers.worker, current.worker)
            dead = (
                owner is None
                or (now() - owner.last_heartbeat).total_seconds() > self.settings.worker_dead_after
            )
            if dead:
                if current.attempts >= current.max_attempts:
                    await self._io_call(
                        self.store.fail_unfinished,
                        current.id,
                        TaskError("WorkerLost", f"worker {current.worker} stopped during the last attempt"),
                        now(),
                    )
                    self._delete(message)
                    return None
                taken = await self._io_call(self.store.take_over, current, self.id, now())
                if taken is not None:
                    log.warning("took over task %s from dead worker %s", current.id, current.worker)
                    return taken
        # Keep it as a standby copy: if the owner dies, it comes back.
        await self._hide(message, self.settings.visibility_timeout)
        return None

    # -- running a handler --------------------------------------------------------------

    async def _run(self, task: Task, message: Message, tasktype: TaskType) -> None:
        context = Context(
            task_id=task.id,
            task_type=task.type,
            attempt=task.attempts,
            max_attempts=task.max_attempts,
            settings=self.settings,
            logger=logging.LoggerAdapter(log, {"task_id": task.id, "task_type": task.type}),
            options=dict(tasktype.options),
            blob_factory=self.blob_factory,
            store=self.store,
        )
        running = Running(task, message, context)
        self._running[task.id] = running
        labels = {"type": task.type}
        self.metrics.started.labels(**labels).inc()
        ready_at = task.run_at or task.created_at
        self.metrics.queue_wait.labels(**labels).observe(max(0.0, (now() - ready_at).total_seconds()))
        self.metrics.in_progress.labels(**labels).inc()
        fn = handlers.get(tasktype.handler)
        outcome: tuple[Status | None, Any, TaskError | None]
        try:
            if fn is None:
                outcome = (
                    Status.FAILED,
                    None,
                    TaskError("HandlerNotFound", f"this worker has no handler {tasktype.handler!r}"),
                )
            else:
                outcome = await self._call(fn, task, context, tasktype.timeout_seconds)
        finally:
            self.metrics.in_progress.labels(**labels).dec()
            self.metrics.duration.labels(**labels).observe(time.monotonic() - running.started)
        try:
            await self._record(running, tasktype, *outcome)
        finally:
            self._running.pop(task.id, None)

    async def _call(
        self, fn: handlers.Handler, task: Task, context: Context, timeout: float
    ) -> tuple[Status | None, Any, TaskError | None]:
        try:
            if inspect.iscoroutinefunction(fn):
                result = await asyncio.wait_for(fn(task.payload, context), timeout)
            else:
                loop = asyncio.get_running_loop()
                future = loop.run_in_executor(self._handlers, fn, task.payload, context)
                # A thread cannot be killed: on timeout the attempt fails and the thread is
                # told to stop through the cancel flag.
                try:
                    result = await asyncio.wait_for(asyncio.shield(future), timeout)
                except TimeoutError:
                    context.cancel_event.set()
                    raise
        except TaskCancelled as exc:
            return Status.CANCELLED, None, TaskError("Cancelled", str(exc) or "cancelled on request")
        except TimeoutError:
            return None, None, TaskError("Timeout", f"attempt exceeded timeoutSeconds={timeout:g}")
        except PermanentError as exc:
            return Status.FAILED, None, TaskError(type(exc).__name__, str(exc))
        except (TypeError, ValueError) as exc:
            if context.cancelled:
                return Status.CANCELLED, None, TaskError("Cancelled", "cancelled on request")
            return None, None, TaskError(type(exc).__name__, str(exc)[:2000])
        except Exception as exc:
            if context.cancelled:
                return Status.CANCELLED, None, TaskError("Cancelled", "cancelled on request")
            return None, None, TaskError(type(exc).__name__, str(exc)[:2000] or type(exc).__name__)
        # A result the store or a reader cannot take fails the task for good: running the
        # handler again would return the same.
        value, problem = checked_result(task.payload, result)
        if problem is not None:
            return Status.FAILED, None, problem
        return Status.SUCCEEDED, value, None

    async def _record(
        self,
        running: Running,
        tasktype: TaskType,
        status: Status | None,
        result: Any,
        error: TaskError | None,
    ) -> None:
        task, message = running.task, running.message
        labels = {"type": task.type}
        if status is None:  # a retryable failure
            assert error is not None
            if task.attempts < task.max_attempts:
                delay = backoff_seconds(tasktype, task.attempts)
                requeued = await self._write_outcome(
                    self.store.requeue, task, now() + timedelta(seconds=delay), error, now()
                )
                self.metrics.finished.labels(outcome="retried", **labels).inc()
                if requeued:
                    await self._hide(message, max(1, delay))
                return
            status = Status.FAILED
        if status is Status.FAILED:
            assert error is not None
            error = TaskError(error.type, f"{error.message} (attempt {task.attempts} of {task.max_attempts})")
        try:
            finished = await self._write_outcome(
                self.store.finish, task, status, now(), result, error, tasktype.retention_seconds
            )
        except RecordTooLarge as exc:
            # Refused whole, so the task is still running; re-running the handler on the
            # next delivery would be refused again. Record a failure without the result.
            log.error("task %s: finished record refused for its size (%s)", task.id, exc)
            status, error = (
                Status.FAILED,
                TaskError(
                    "ResultTooLarge",
                    "the store refused the finished record for its size; the result is dropped",
                ),
            )
            finished = await self._write_outcome(
                self.store.finish, task, status, now(), None, error, tasktype.retention_seconds
            )
        self.metrics.finished.labels(outcome=status.value, **labels).inc()
        if finished is None:
            log.warning("task %s changed owner while it ran; its new owner records it", task.id)
            return
        self._delete(message)

    async def _write_outcome(self, fn: Callable[..., T], *args: Any) -> T:
        """Record a known outcome, retrying through throttling and outages. Giving up would
        leave the task ``running`` under a live worker (never taken over), and running the
        handler again would repeat its side effects. Meanwhile the heartbeat keeps the
        message hidden (the task is still in ``_running``)."""
        delay = 0.5
        while True:
            try:
                return await self._io_call(fn, *args)
            except Unavailable as exc:
                log.warning("recording an outcome failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # -- deletes, batched ---------------------------------------------------------------

    def _delete(self, message: Message) -> None:
        self._deletes.append(message.receipt)
        if self._delete_wakeup is not None:
            self._delete_wakeup.set()

    async def _delete_batch(self, batch: list[str]) -> None:
        try:
            await self._io_call(self.broker.delete_many, batch)
        except ConveyorError as exc:
            # The task is terminal already; its message coming back is a no-op.
            log.warning("delete of %d message(s) failed: %s", len(batch), exc)

    async def _flush_deletes(self) -> None:
        while self._deletes:
            batch, self._deletes = self._deletes[:10], self._deletes[10:]
            await self._delete_batch(batch)

    async def _delete_loop(self) -> None:
        """Delete in batches of ten, each pending delete waiting at most about
        DELETE_GATHER_SECONDS for its batch to fill."""
        assert self._delete_wakeup is not None
        while True:
            await self._delete_wakeup.wait()
            while self._deletes:
                await self._wait_until(
                    self._delete_wakeup,
                    lambda: len(self._deletes) >= 10 or self.stopping,
                    DELETE_GATHER_SECONDS,
                )
                batch, self._deletes = self._deletes[:10], self._deletes[10:]
                await self._delete_batch(batch)
            self._delete_wakeup.clear()

    # -- heartbeat --------------------------------------------------------------------------

    async def _beat(self) -> None:
        info = WorkerInfo(
            id=self.id,
            host=self.host,
            pid=os.getpid(),
            started_at=self.started_at,
            last_heartbeat=now(),
            in_flight=len(self._running),
            concurrency=self.concurrency,
            version=__version__,
        )
        cancel = await self._io_call(self.engine.workers.heartbeat, info, 3600)
        for task_id in cancel:
            running = self._running.get(task_id)
            if running is not None:
                running.context.cancel_event.set()

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            try:
                extend = [
                    (r.message.receipt, self.settings.visibility_timeout) for r in self._running.values()
                ]
                if extend:
                    await self._io_call(self.broker.change_visibility_many, extend)
                await self._beat()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
