"""The engine sends each task to its priority level's queue: submit, batch, retry, the
sweeper and a cancelled task's webhook; stats count each level and their sum."""

from __future__ import annotations

import pytest

from conveyor.clock import FakeClock
from conveyor.engine import Engine, Submission
from conveyor.memory import MemoryBroker
from conveyor.model import NOTIFY_TYPE, PRIORITIES, Priority, QueueDepth, Status
from tests.conftest import make_settings
from tests.support.engines import memory_engine

H, N, L = Priority.HIGH, Priority.NORMAL, Priority.LOW


@pytest.fixture
def engine() -> Engine:
    return memory_engine(make_settings(), clock=FakeClock(), lanes=True)


def ids_in(engine: Engine, level: Priority) -> list[str]:
    broker = engine.lane(level)
    assert isinstance(broker, MemoryBroker)
    return [m.task_id for m in broker.receive(10, 0)]


def test_submit_and_batch_go_to_each_tasks_level(engine: Engine):
    high, _ = engine.submit(Submission("echo", {}, priority=H))
    plain, _ = engine.submit(Submission("echo", {}))  # the type's default: normal
    batch = engine.submit_batch(
        [Submission("echo", {}, priority=L), Submission("echo", {}, priority=H), Submission("echo", {})]
    )
    assert sorted(ids_in(engine, H)) == sorted([high.id, batch[1].id])
    assert sorted(ids_in(engine, N)) == sorted([plain.id, batch[2].id])
    assert ids_in(engine, L) == [batch[0].id]


def test_received_messages_name_their_level(engine: Engine):
    for level in PRIORITIES:
        engine.submit(Submission("echo", {}, priority=level))
        [message] = engine.lane(level).receive(10, 0)
        assert message.lane is level


def test_retry_and_sweep_send_to_the_tasks_level(engine: Engine):
    task, _ = engine.submit(Submission("echo", {}, priority=L))
    [message] = engine.lane(L).receive(1, 0)
    engine.lane(L).delete_many([message.receipt])  # the message is lost: only the sweeper can help
    clock = engine.clock
    assert isinstance(clock, FakeClock)
    clock.advance(engine.settings.redispatch_after_seconds + 1)
    assert engine.sweep() == 1
    assert ids_in(engine, L) == [task.id] and ids_in(engine, N) == [] and ids_in(engine, H) == []


def test_a_sweep_counts_every_levels_queue_before_calling_a_task_orphaned(engine: Engine):
    """Two queued tasks, each with its message in its own level's queue: none is orphaned,
    though the normal queue alone holds fewer messages than there are queued tasks."""
    engine.submit(Submission("echo", {}, priority=H))
    engine.submit(Submission("echo", {}, priority=L))
    clock = engine.clock
    assert isinstance(clock, FakeClock)
    clock.advance(engine.settings.redispatch_after_seconds + 1)
    assert engine.sweep() == 0


def test_a_failed_task_retried_goes_back_to_its_level(engine: Engine):
    task, _ = engine.submit(Submission("echo", {}, priority=H))
    [message] = engine.lane(H).receive(1, 0)
    engine.lane(H).delete_many([message.receipt])
    from conveyor.model import TaskError

    engine.store.fail_unfinished(task.id, TaskError("Boom", "x"), engine.clock.now())
    assert engine.retry(task.id).status is Status.QUEUED
    assert ids_in(engine, H) == [task.id] and ids_in(engine, N) == []


def test_a_cancelled_tasks_webhook_goes_to_its_level(engine: Engine):
    task, _ = engine.submit(Submission("echo", {}, priority=L, notify_url="https://example.com/hook"))
    assert engine.cancel(task.id).status is Status.CANCELLED
    sent = engine.lane(L).receive(10, 0)
    assert sorted(m.task_type for m in sent) == sorted(["echo", NOTIFY_TYPE])
    assert ids_in(engine, N) == []


def test_stats_give_each_level_and_their_sum(engine: Engine):
    for level, n in ((H, 1), (N, 2), (L, 3)):
        for _ in range(n):
            engine.submit(Submission("echo", {}, priority=level))
    engine.submit(Submission("echo", {}, priority=L, delay_seconds=60))
    stats = engine.stats().to_json()
    assert stats["queues"] == {
        "high": {"visible": 1, "in_flight": 0, "delayed": 0},
        "normal": {"visible": 2, "in_flight": 0, "delayed": 0},
        "low": {"visible": 3, "in_flight": 0, "delayed": 1},
    }
    assert stats["queue"] == {"visible": 6, "in_flight": 0, "delayed": 1} and stats["queue_depth"] == 7


def test_levels_sharing_one_queue_count_it_once():
    """An engine given one broker (no lanes) polls and counts that queue once."""
    engine = memory_engine(make_settings(), clock=FakeClock())
    engine.submit(Submission("echo", {}, priority=H))
    engine.submit(Submission("echo", {}, priority=L))
    assert [p for p, _ in engine.queues()] == [N]
    stats = engine.stats()
    assert stats.queue == QueueDepth(visible=2) and sum(d.total for d in (stats.queues or {}).values()) == 2


def test_a_types_default_priority_routes_its_tasks(tmp_path):
    """A TaskType's `priority` is its tasks' level when the submit names none (as a
    schedule's submits do)."""
    import shutil

    from tests.conftest import EXAMPLES

    types = tmp_path / "types"
    shutil.copytree(EXAMPLES, types)
    echo = types / "echo.yaml"
    echo.write_text(echo.read_text().replace("spec:\n", "spec:\n  priority: low\n"))
    engine = memory_engine(make_settings(), types, clock=FakeClock(), lanes=True)
    task, _ = engine.submit(Submission("echo", {}))
    assert task.priority is L and ids_in(engine, L) == [task.id]
    urgent, _ = engine.submit(Submission("echo", {}, priority=H))  # the submit's own wins
    assert ids_in(engine, H) == [urgent.id]
