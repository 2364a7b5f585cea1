"""The worker over three priority queues (memory adapters): every action on a message goes
to the queue it came from, deletes are batched per queue, a high task is started ahead of
a low backlog, and an idle worker keeps one long poll per queue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conveyor.memory import MemoryBroker
from conveyor.model import PRIORITIES, Priority, QueueDepth, Status
from tests.support.spies import spy
from tests.worker.conftest import Stub
from tests.worker.testhandlers import runs
from worker.deletes import DeleteBatcher

H, N, L = Priority.HIGH, Priority.NORMAL, Priority.LOW


def queue(stub: Stub, level: Priority) -> MemoryBroker:
    broker = stub.engine.lane(level)
    assert isinstance(broker, MemoryBroker)
    return broker


def test_retries_and_deletes_of_a_high_task_stay_on_the_high_queue(make_stub, tmp_path: Path):
    stub = make_stub(lanes=True)
    others = [spy(queue(stub, level), name) for level in (N, L) for name in ("send", "delete_many")]
    others += [spy(queue(stub, level), "change_visibility") for level in (N, L)]
    hides = spy(queue(stub, H), "change_visibility")
    task = stub.submit("flaky", {"log": str(tmp_path / "runs"), "succeed_on": 2}, priority=H)
    stub.start()
    stub.settle(lambda: stub.get(task.id).status is Status.QUEUED and stub.get(task.id).attempts == 1)
    assert hides.calls  # the retry hid the message on its own queue
    stub.clock.advance(5)
    assert stub.finished(task.id).status is Status.SUCCEEDED
    queue(stub, H).join(timeout=5)  # and the finish deleted it there
    assert all(not s.calls for s in others)


def test_a_paused_types_message_is_resent_to_its_own_queue(make_stub):
    stub = make_stub(lanes=True, hold_seconds=30)
    paused = Path(stub.settings.tasktypes) / "echo.yaml"
    paused.write_text(paused.read_text().replace("spec:\n", "spec:\n  paused: true\n"))
    stub.until(lambda: stub.engine.registry.get("echo").paused, timeout=5)
    task = stub.submit("echo", {}, priority=L)
    stub.start()
    stub.settle(lambda: queue(stub, L).depth() == QueueDepth(delayed=1))
    assert queue(stub, N).depth() == queue(stub, H).depth() == QueueDepth()
    assert stub.get(task.id).status is Status.QUEUED


def test_deletes_are_batched_per_queue():
    sent: list[tuple[Priority, list[str]]] = []

    async def delete_many(lane: Priority, receipts: list[str]) -> None:
        sent.append((lane, receipts))

    async def scenario() -> None:
        batcher = DeleteBatcher(delete_many, gather_seconds=0.05)
        runner = asyncio.create_task(batcher.run())
        for n in range(25):
            batcher.add(f"{PRIORITIES[n % 3].value}-{n}", PRIORITIES[n % 3])
        await asyncio.sleep(0.2)
        batcher.closing()
        await runner

    asyncio.run(scenario())
    assert all(r.startswith(lane.value + "-") for lane, receipts in sent for r in receipts)
    assert all(len(receipts) <= 10 for _, receipts in sent)
    assert sorted(r for _, receipts in sent for r in receipts) == sorted(
        f"{PRIORITIES[n % 3].value}-{n}" for n in range(25)
    )
    assert len(sent) == 3  # 9, 8 and 8: one request per queue, not one per message


def test_a_quiet_queues_delete_waits_no_longer_than_the_gather_time_under_another_queues_load():
    """A busy queue filling a batch within every gather window never holds back another
    queue's lone receipt: each queue's batch goes once its oldest receipt has waited."""
    sent: list[tuple[Priority, list[str], float]] = []

    async def delete_many(lane: Priority, receipts: list[str]) -> None:
        sent.append((lane, receipts, time.monotonic()))

    async def scenario() -> float:
        batcher = DeleteBatcher(delete_many, gather_seconds=0.2)
        runner = asyncio.create_task(batcher.run())
        batcher.add("low-0", L)
        added = time.monotonic()
        for n in range(12):  # a full high batch every 0.05 s for 0.6 s
            for k in range(10):
                batcher.add(f"high-{n}-{k}", H)
            await asyncio.sleep(0.05)
        batcher.closing()
        await runner
        return added

    added = asyncio.run(scenario())
    (low,) = [(receipts, at) for lane, receipts, at in sent if lane is L]
    assert low[0] == ["low-0"] and low[1] - added < 0.45


def test_a_high_task_starts_ahead_of_a_low_backlog(make_stub, tmp_path: Path):
    stub = make_stub(lanes=True, worker_concurrency=2)
    log = tmp_path / "runs"
    backlog = [stub.submit("count", {"log": str(log), "seconds": 0.1}, priority=L) for _ in range(60)]
    stub.start()
    stub.until(lambda: len(runs(log)) >= 4)  # the worker is busy with the backlog
    before = len(runs(log))
    high = stub.submit("count", {"log": str(log), "seconds": 0.1}, priority=H)
    submitted = time.monotonic()
    stub.until(lambda: high.id in {r[0] for r in runs(log)})
    waited = time.monotonic() - submitted
    started = [r[0] for r in runs(log)]
    # Two slots of 0.1 s tasks: the high task is taken with the next free slot; at most a
    # receive of low already under way (two slots) starts between.
    assert started.index(high.id) - before <= 2 and waited < 1.0, (started.index(high.id) - before, waited)
    assert sum(1 for t in backlog if stub.get(t.id).status is Status.QUEUED) > 30  # the backlog waits


def test_an_idle_worker_long_polls_each_queue(make_stub):
    stub = make_stub(lanes=True, poll_wait_seconds=0.5)
    receives = {level: spy(queue(stub, level), "receive") for level in PRIORITIES}
    stub.start()
    time.sleep(2.0)
    for level, calls in receives.items():
        waits = calls.arg(1, "wait_seconds")
        # One short poll at start, then long polls back to back: 2 s / 0.5 s of them.
        assert waits[0] == 0 and set(waits[1:]) == {0.5}, (level, waits)
        assert 4 <= len(waits) <= 6, (level, waits)


def test_what_a_long_poll_brings_beyond_the_free_slots_goes_back_at_once(make_stub, tmp_path: Path):
    """One slot, busy with a low task: the high queue's long poll brings the new high task
    anyway. It is handed back at once (not left hidden for the visibility timeout) and
    taken with the slot's next turn, ahead of the low backlog."""
    stub = make_stub(lanes=True, worker_concurrency=1, poll_wait_seconds=5)
    log = tmp_path / "runs"
    first = stub.submit("count", {"log": str(log), "seconds": 2.5}, priority=L)
    rest = [stub.submit("count", {"log": str(log), "seconds": 0.05}, priority=L) for _ in range(3)]
    receives = spy(queue(stub, H), "receive")
    w = stub.start()
    stub.until(lambda: stub.get(first.id).status is Status.RUNNING)
    stub.until(lambda: H in w.worker.long_polled)
    high = stub.submit("count", {"log": str(log)}, priority=H)
    stub.until(lambda: any(r for r in receives.results()), timeout=1.0)  # the long poll took it at once
    # Back in the queue without the clock moving (the visibility timeout never ran), while
    # the one slot is still busy: it was never over-committed.
    stub.until(lambda: queue(stub, H).depth().visible == 1, timeout=1.0)
    assert stub.get(first.id).status is Status.RUNNING and stub.get(high.id).status is Status.QUEUED
    stub.finished(high.id)
    # Put back as a fresh copy: the take that ran it counts as the message's first receive,
    # so takes by busy workers never walk a task towards the dead-letter queue.
    taken = [m for r in receives.results() for m in r if m.task_id == high.id]
    assert [m.receive_count for m in taken] == [1, 1], taken
    order = [r[0] for r in runs(log)]
    assert order[:2] == [first.id, high.id], order
    assert all(stub.finished(t.id).status is Status.SUCCEEDED for t in rest)


def test_a_busy_workers_long_poll_asks_for_one_message(make_stub, tmp_path: Path):
    """With every slot taken, a quiet level's long poll asks for one message (enough to
    see that level has work), not a slot count's worth to hand back at a send and a
    delete each."""
    stub = make_stub(lanes=True, worker_concurrency=3, poll_wait_seconds=1)
    log = tmp_path / "runs"
    busy = [stub.submit("count", {"log": str(log), "seconds": 3}, priority=L) for _ in range(3)]
    receives = spy(queue(stub, H), "receive")
    stub.start()
    stub.until(lambda: all(stub.get(t.id).status is Status.RUNNING for t in busy))
    started = len(receives.calls)
    stub.until(lambda: len(receives.calls) > started, timeout=2.0)  # an idle poll ran out...
    time.sleep(0.2)  # ...and the next one is waiting, started with every slot busy
    high = stub.submit("count", {"log": str(log)}, priority=H)
    stub.until(lambda: any(m.task_id == high.id for c in receives.calls for m in c.result or ()), timeout=2.0)
    took = next(c for c in receives.calls if any(m.task_id == high.id for m in c.result or ()))
    assert took.args[0] == 1, took.args
