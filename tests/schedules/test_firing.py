"""The firing loop on the memory adapters, driven by a fake clock: replicas racing, a
crash between submit and bookkeeping, each concurrency policy, suspend and resume,
catch-up after an outage, metrics and the status sink."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from conveyor.engine import Engine
from conveyor.memory import MemoryTaskStore
from conveyor.metrics import SchedulerMetrics
from conveyor.model import Status, now
from conveyor.schedule import ScheduleSpec
from conveyor.scheduler import PRINCIPAL, Scheduler
from tests.conftest import make_settings
from tests.support.engines import memory_engine

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **kw: float) -> None:
        self.at += timedelta(**kw)


def engine() -> Engine:
    settings = make_settings()
    return memory_engine(settings)


def spec(**kw: Any) -> ScheduleSpec:
    base = ScheduleSpec(
        name="s", namespace="default", task_type="echo", payload={"n": 1}, schedule="* * * * *"
    )
    return replace(base, **kw)


class Schedules:
    """A mutable source, as a watcher would serve."""

    def __init__(self, *specs: ScheduleSpec) -> None:
        self.specs = list(specs)

    def __call__(self) -> list[ScheduleSpec]:
        return self.specs


def scheduler(eng: Engine, source: Schedules, clock: Clock, **kw: Any) -> Scheduler:
    metrics = kw.pop("metrics", None) or SchedulerMetrics(CollectorRegistry())
    return Scheduler(eng, source, metrics=metrics, clock=clock, interval=5, **kw)


def tasks(eng: Engine) -> list:
    return list(reversed(eng.store.query(limit=200).items))


def fires(metrics: SchedulerMetrics, outcome: str, key: str = "default/s") -> float:
    value = metrics.registry.get_sample_value(
        "conveyor_schedule_fires_total", {"schedule": key, "outcome": outcome}
    )
    return value or 0.0


def finish(eng: Engine, task_id: str) -> None:
    task = eng.store.get(task_id)
    claimed = eng.store.claim(task_id, task.type, "w1", now()).task
    eng.store.finish(claimed, Status.SUCCEEDED, now())


def test_three_replicas_ticking_together_fire_each_slot_once() -> None:
    eng, clock, source = engine(), Clock(T0), Schedules(spec())
    metrics = SchedulerMetrics(CollectorRegistry())
    replicas = [scheduler(eng, source, clock, metrics=metrics) for _ in range(3)]
    for r in replicas:
        assert r.tick() == []  # first sight: nothing before now is owed
    for _ in range(5):
        clock.advance(seconds=60)
        for r in replicas:
            r.tick()
    made = tasks(eng)
    assert len(made) == 5
    assert all(t.type == "echo" and t.payload == {"n": 1} for t in made)
    assert fires(metrics, "submitted") == 5
    state = eng.store.schedule_state("default/s")
    assert state.last_slot == T0 + timedelta(minutes=5) and state.last_task_id == made[-1].id
    assert metrics.registry.get_sample_value("conveyor_schedule_lag_seconds_count") == 5


def test_a_crash_between_submit_and_bookkeeping_refires_the_same_task() -> None:
    eng, clock, source = engine(), Clock(T0), Schedules(spec())
    first = scheduler(eng, source, clock)
    first.tick()
    clock.advance(seconds=61)
    store = eng.store
    real = store.advance_schedule

    def crash(*a: Any, **kw: Any) -> bool:
        raise SystemExit("killed")

    store.advance_schedule = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        first.run_schedule(source.specs[0])
    store.advance_schedule = real  # type: ignore[method-assign]
    assert len(tasks(eng)) == 1  # the task exists; the state did not move
    # A fresh replica (or the restarted one) plans the same slot and gets the same task.
    again = scheduler(eng, source, clock).tick()
    assert [(f.created, f.task_id) for f in again if f.task_id] == [(False, tasks(eng)[0].id)]
    assert len(tasks(eng)) == 1


def test_a_client_cannot_take_a_slot_with_its_own_idempotency_key() -> None:
    # Clients' keys are "<token name>:<key>"; token names start with a letter or digit.
    from conveyor import tokens

    assert not tokens._NAME.match(PRINCIPAL)


@pytest.mark.parametrize(
    ("policy", "second_fires", "first_ends"),
    [("Allow", True, Status.QUEUED), ("Forbid", False, Status.QUEUED), ("Replace", True, Status.CANCELLED)],
)
def test_concurrency_policies_while_the_previous_task_is_queued(
    policy: str, second_fires: bool, first_ends: Status
) -> None:
    eng, clock, source = engine(), Clock(T0), Schedules(spec(concurrency_policy=policy))
    metrics = SchedulerMetrics(CollectorRegistry())
    s = scheduler(eng, source, clock, metrics=metrics)
    s.tick()
    clock.advance(seconds=60)
    s.tick()
    first = tasks(eng)[0]
    clock.advance(seconds=60)
    s.tick()
    made = tasks(eng)
    assert len(made) == (2 if second_fires else 1)
    assert eng.store.get(first.id).status is first_ends
    assert fires(metrics, "skipped_overlap") == (0 if second_fires else 1)
    # Once the previous task is done, every policy fires the next slot.
    for t in made:
        if eng.store.get(t.id).status is Status.QUEUED:
            finish(eng, t.id)
    clock.advance(seconds=60)
    s.tick()
    assert len(tasks(eng)) == len(made) + 1


def test_forbid_skips_while_running_too() -> None:
    eng, clock, source = engine(), Clock(T0), Schedules(spec(concurrency_policy="Forbid"))
    s = scheduler(eng, source, clock)
    s.tick()
    clock.advance(seconds=60)
    s.tick()
    first = tasks(eng)[0]
    assert eng.store.claim(first.id, "echo", "w1", now()).task is not None
    clock.advance(seconds=60)
    assert [f.outcome for f in s.tick()] == ["skipped_overlap"]
    assert len(tasks(eng)) == 1


def test_suspend_then_resume_runs_no_slot_from_the_suspension() -> None:
    eng, clock, source = engine(), Clock(T0), Schedules(spec())
    s = scheduler(eng, source, clock)
    s.tick()
    clock.advance(seconds=60)
    s.tick()
    assert len(tasks(eng)) == 1
    source.specs = [spec(suspend=True)]
    for _ in range(5):
        clock.advance(seconds=60)
        assert s.tick() == []
    assert len(tasks(eng)) == 1
    assert s.view(source.specs[0])["next_run_at"] is None
    source.specs = [spec()]
    clock.advance(seconds=1)
    assert s.tick() == []  # the slots that passed while suspended are not owed
    clock.advance(seconds=60)
    fired = s.tick()
    assert [f.outcome for f in fired] == ["submitted"] and len(tasks(eng)) == 2


def test_catch_up_after_an_outage_through_the_loop() -> None:
    eng, clock, source = engine(), Clock(T0), Schedules(spec(schedule="0 * * * *", max_catch_up=2))
    metrics = SchedulerMetrics(CollectorRegistry())
    s = scheduler(eng, source, clock, metrics=metrics)
    eng.store.advance_schedule("default/s", T0)  # handled up to 12:00, then the API was down
    clock.advance(hours=5, minutes=30)
    fired = s.tick()
    assert [(f.slot.hour, f.outcome) for f in fired if f.task_id] == [(16, "catch_up"), (17, "catch_up")]
    assert fires(metrics, "catch_up") == 2 and fires(metrics, "skipped_deadline") == 3
    assert len(tasks(eng)) == 2
    # A replica that comes up now finds nothing left to do.
    assert scheduler(eng, source, clock).tick() == []


def test_a_schedule_whose_type_cannot_run_is_not_ready_and_never_fires() -> None:
    eng, clock = engine(), Clock(T0)
    source = Schedules(
        spec(task_type="no-such-type"), spec(name="off", ready=False, reason="InvalidSchedule")
    )
    s = scheduler(eng, source, clock)
    s.tick()
    clock.advance(minutes=3)
    s.tick()
    assert tasks(eng) == []
    views = {v["name"]: v for v in (s.view(x) for x in s.specs())}
    assert views["s"]["ready"] is False and "no-such-type" in views["s"]["reason"]
    assert views["off"]["reason"] == "InvalidSchedule"


def test_the_status_sink_hears_each_fire_and_a_failing_sink_is_harmless() -> None:
    eng, clock, source = engine(), Clock(T0), Schedules(spec())
    heard: list[tuple[str, dict[str, Any]]] = []

    def sink(s: ScheduleSpec, fields: dict[str, Any]) -> None:
        heard.append((s.key, fields))
        raise RuntimeError("API server down")

    s = scheduler(eng, source, clock, status_sink=sink)
    s.tick()
    clock.advance(seconds=60)
    s.tick()
    task = tasks(eng)[0]
    key, fields = heard[-1]
    assert key == "default/s"
    assert fields == {
        "lastScheduleTime": "2026-05-01T12:01:00.000Z",
        "nextScheduleTime": "2026-05-01T12:02:00.000Z",
        "lastTaskId": task.id,
        "lastTaskStatus": "queued",
    }
    clock.advance(seconds=60)
    s.tick()
    assert len(tasks(eng)) == 2  # firing went on


def test_trigger_runs_one_now_and_becomes_the_last_task() -> None:
    eng, clock, source = engine(), Clock(T0), Schedules(spec(concurrency_policy="Forbid"))
    s = scheduler(eng, source, clock)
    s.tick()
    task, created = s.trigger(source.specs[0])
    assert created
    assert task.status is Status.QUEUED
    assert s.view(source.specs[0])["last_task_id"] == task.id
    # Forbid sees the triggered task as the previous one.
    clock.advance(seconds=60)
    assert [f.outcome for f in s.tick()] == ["skipped_overlap"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("Allow", ["state"]), ("Forbid", ["state", "get"]), ("Replace", ["state", "get"])],
)
def test_a_fire_reads_the_state_once_and_the_previous_task_only_when_the_policy_needs_it(
    policy: str, expected: list[str]
) -> None:
    # The plan's state read serves the fire too; Allow needs nothing from the previous
    # task, so it costs no GetItem of it; Forbid and Replace read it once.
    eng, clock = engine(), Clock(T0)
    one = spec(concurrency_policy=policy)
    sched = scheduler(eng, Schedules(one), clock)
    sched.tick()
    clock.advance(minutes=1)
    assert len(sched.tick()) == 1
    finish(eng, tasks(eng)[-1].id)  # the previous task is done, so every policy fires
    reads: list[str] = []

    class Counting(MemoryTaskStore):
        def schedule_state(self, key: str) -> Any:
            reads.append("state")
            return super().schedule_state(key)

        def get(self, *args: Any, **kw: Any) -> Any:
            reads.append("get")
            return super().get(*args, **kw)

    eng.store.__class__ = Counting
    clock.advance(minutes=1)
    (fired,) = sched.run_schedule(one)
    assert fired.created
    assert reads == expected


def test_the_firing_loop_runs_while_the_app_does_and_stops_with_it() -> None:
    import asyncio

    from conveyor import scheduler as firing

    eng = engine()
    eng.settings = replace(eng.settings, scheduler_enabled=True)
    sched = scheduler(eng, Schedules(spec()), Clock(T0))

    async def scenario() -> asyncio.Task[Any]:
        async with firing.background(sched) as running:
            assert running is sched
            [task] = [t for t in asyncio.all_tasks() if t.get_name() == "conveyor-scheduler"]
            await asyncio.sleep(0.05)
            assert sched.ticks >= 1
        await asyncio.sleep(0)
        return task

    assert asyncio.run(scenario()).cancelled()
