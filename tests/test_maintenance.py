"""The sweeper and the DLQ reaper run in the API process, so nothing waits for a worker.

No test here starts a worker: KEDA may have scaled them to zero. The fast tests run the
real API app (its lifespan) over the memory adapters with a fake clock; one test shows
the same over moto's real SQS and DynamoDB.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from api.app import create_app
from conveyor import maintenance
from conveyor.clock import Clock, FakeClock
from conveyor.engine import Engine, Submission
from conveyor.errors import Unavailable
from conveyor.maintenance import Maintenance, interval_seconds
from conveyor.memory import MemoryBroker, MemoryTaskStore
from conveyor.model import Status, Task, new_id, now
from conveyor.settings import Settings
from tests.conftest import AUTH_HEADERS, make_settings, wait_for
from tests.support import engines

HORIZON = 300  # redispatch_after_seconds: the fake clock jumps past it


@pytest.fixture
def clock() -> FakeClock:
    """The engines' clock, moved forward by hand: no test sleeps out the horizon."""
    return FakeClock(now())


def memory_engine(
    store: MemoryTaskStore | None = None,
    broker: MemoryBroker | None = None,
    dlq: MemoryBroker | None = None,
    clock: Clock | None = None,
    **overrides: Any,
) -> Engine:
    values: dict[str, Any] = {"redispatch_after_seconds": HORIZON, "maintenance_interval_seconds": 0.02}
    settings = make_settings(**(values | overrides))
    return engines.memory_engine(
        settings, clock=clock, store=store, broker=broker, dead_letters=dlq, visibility_timeout=30
    )


def serve(engine: Engine) -> TestClient:
    """The API app as uvicorn runs it: entering the client runs its lifespan."""
    return TestClient(create_app(engine, CollectorRegistry()), headers=AUTH_HEADERS)


def submit_with_send_refused(client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> str:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise Unavailable("sqs SendMessage: refused")

    with monkeypatch.context() as m:
        m.setattr(engine.broker, "send", refuse)
        r = client.post("/v1/tasks", json={"type": "echo", "payload": {"n": 1}})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_api_resends_a_recorded_task_whose_send_failed_with_no_worker(clock, monkeypatch):
    engine = memory_engine(clock=clock)
    with serve(engine) as client:
        task_id = submit_with_send_refused(client, engine, monkeypatch)
        assert engine.broker.depth().total == 0  # 202, recorded, no message
        clock.advance(HORIZON + 1)
        wait_for(lambda: engine.broker.depth().total == 1, timeout=5)
        [message] = engine.broker.receive(10, 0)
        assert message.task_id == task_id
        assert engine.get(task_id).status is Status.QUEUED  # a worker, once woken, runs it


def running_then_dead_lettered(engine: Engine) -> str:
    """A task whose worker crashed on it max_receive_count times: it is left running and
    SQS moved its message to the DLQ."""
    task, _ = engine.submit(Submission("echo", {"crash": True}))
    [message] = engine.broker.receive(1, 0)
    assert engine.store.claim(task.id, task.type, "crashed-worker", now()).task is not None
    engine.broker.delete_many([message.receipt])
    engine.dead_letters.send(task.id, task.type)
    return task.id


def count_rounds(engines: list[Engine], monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    rounds = dict.fromkeys(range(len(engines)), 0)
    for n, e in enumerate(engines):

        def sweep(n: int = n, real: Any = e.sweep) -> int:
            rounds[n] += 1
            return int(real())

        monkeypatch.setattr(e, "sweep", sweep)
    return rounds


def test_api_fails_a_dead_lettered_task_with_no_worker(clock):
    engine = memory_engine(clock=clock)
    with serve(engine):
        task_id = running_then_dead_lettered(engine)
        done = wait_for(lambda: (t := engine.get(task_id)).status.terminal and t, timeout=5)
    assert done.status is Status.FAILED and done.error and done.error.type == "DeadLettered"
    # The message stays in the DLQ for operators (and its alert), hidden between looks.
    assert engine.dead_letters.depth().total == 1 and engine.dead_letters.depth().visible == 0


def test_several_api_replicas_send_each_orphan_once_and_reap_once(clock, monkeypatch):
    """Replicas share the store and both queues and race every round: the conditional
    writes keep it to one message per orphan."""
    store, broker, dlq = MemoryTaskStore(), MemoryBroker(30), MemoryBroker(30)
    replicas = [memory_engine(store, broker, dlq, clock=clock) for _ in range(3)]
    # Recorded by a submitter that died before SendMessage.
    orphans = [store.create(Task(id=new_id(), type="echo", payload={"n": n}))[0] for n in range(7)]
    crashed = running_then_dead_lettered(replicas[0])
    clock.advance(HORIZON + 1)
    rounds = count_rounds(replicas, monkeypatch)
    clients = [serve(e) for e in replicas]
    for c in clients:
        c.__enter__()
    try:
        wait_for(lambda: min(rounds.values()) >= 10, timeout=10)  # every replica swept often
    finally:
        for c in clients:
            c.__exit__(None, None, None)
    assert sorted(m.task_id for m in broker.receive(10, 0)) == sorted(t.id for t in orphans)
    assert broker.depth().total == len(orphans)
    done = store.get(crashed)
    assert done is not None and done.status is Status.FAILED


def test_the_setting_turns_the_loop_off(clock, monkeypatch):
    engine = memory_engine(maintenance_enabled=False, clock=clock)
    with serve(engine) as client:
        submit_with_send_refused(client, engine, monkeypatch)
        clock.advance(HORIZON + 1)
        asyncio.run(asyncio.sleep(0.3))  # fifteen intervals
        assert engine.broker.depth().total == 0
    # The same engine with the loop on sends it: only the setting made the difference.
    engine.settings = replace(engine.settings, maintenance_enabled=True)
    with serve(engine):
        wait_for(lambda: engine.broker.depth().total == 1, timeout=5)


@pytest.mark.parametrize("failing", ["reap", "sweep"])
def test_a_failing_step_does_not_stop_the_other_or_the_loop(monkeypatch, failing):
    engine = memory_engine()
    calls: list[str] = []

    def step(name: str) -> Any:
        def run() -> int:
            calls.append(name)
            if name == failing:
                raise Unavailable("throttled")
            return 2

        return run

    monkeypatch.setattr(engine, "sweep", step("sweep"))
    monkeypatch.setattr(engine, "reap", step("reap"))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) > 3:
            raise asyncio.CancelledError

    loop = Maintenance(engine, interval=10.0, sleep=sleep, rng=random.Random(1))
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(loop.run())
    assert calls == ["reap", "sweep"] * 3 and loop.rounds == 3
    # Jittered around the interval, so replicas started together spread out.
    assert all(5.0 <= w <= 15.0 for w in waits) and len(set(waits)) == len(waits)


def test_a_queued_task_whose_message_was_dead_lettered_is_failed_not_resent(clock):
    """Its message crashed workers max_receive_count times before any claim: another
    message would only crash them again."""
    engine = memory_engine(clock=clock)
    task, _ = engine.submit(Submission("echo", {"n": 1}))
    [message] = engine.broker.receive(1, 0)
    engine.broker.delete_many([message.receipt])
    engine.dead_letters.send(task.id, task.type)
    clock.advance(HORIZON + 1)  # also a sweeper suspect now
    assert asyncio.run(Maintenance(engine).run_once()) == (0, 1)
    assert engine.get(task.id).status is Status.FAILED
    assert engine.broker.depth().total == 0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, 75.0),  # a quarter of the 300 s horizon
        ({"redispatch_after_seconds": 4}, 5.0),  # never busier than every 5 s unless asked
        ({"maintenance_interval_seconds": 0.5}, 0.5),
    ],
)
def test_interval(overrides, expected):
    assert interval_seconds(Settings(**overrides)) == expected


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("CONVEYOR_MAINTENANCE_ENABLED", "false")
    monkeypatch.setenv("CONVEYOR_MAINTENANCE_INTERVAL_SECONDS", "12.5")
    s = Settings.from_env()
    assert s.maintenance_enabled is False and s.maintenance_interval_seconds == 12.5
    monkeypatch.setenv("CONVEYOR_MAINTENANCE_ENABLED", "ture")
    with pytest.raises(ValueError, match="CONVEYOR_MAINTENANCE_ENABLED"):
        Settings.from_env()


def test_a_burst_of_dead_letters_is_reaped_in_one_round():
    engine = memory_engine()
    tasks = [engine.submit(Submission("echo", {"n": n}))[0] for n in range(35)]
    for t in tasks:
        engine.dead_letters.send(t.id, t.type)
    assert engine.reap() == 35
    assert all(engine.get(t.id).status is Status.FAILED for t in tasks)
    assert engine.reap() == 0


def test_background_stops_with_the_app():
    engine = memory_engine()

    async def scenario() -> asyncio.Task[Any]:
        async with maintenance.background(engine) as running:
            assert running is not None
            [task] = [t for t in asyncio.all_tasks() if t.get_name() == "conveyor-maintenance"]
        await asyncio.sleep(0)
        return task

    assert asyncio.run(scenario()).cancelled()


# -- the same over moto: real SQS and DynamoDB, the API's loop, still no worker -------------


@pytest.fixture
def moto_api(settings_factory) -> Iterator[tuple[Engine, TestClient]]:
    from conveyor.bootstrap import build

    settings = settings_factory(redispatch_after_seconds=1, maintenance_interval_seconds=0.2)
    engine = build(settings).engine
    with serve(engine) as client:
        yield engine, client


def test_on_moto_the_api_resends_and_reaps_with_no_worker(moto_api, monkeypatch):
    engine, client = moto_api
    orphan = submit_with_send_refused(client, engine, monkeypatch)
    r = client.post("/v1/tasks", json={"type": "echo", "payload": {"n": 2}})
    dead = r.json()["id"]
    [message] = engine.broker.receive(10, 0)
    assert message.task_id == dead  # the orphan has no message
    engine.broker.delete_many([message.receipt])
    engine.dead_letters.send(dead, "echo")
    # Past the 1 s horizon the API's loop re-sends the orphan and fails the dead letter.
    wait_for(lambda: engine.broker.depth().total == 1, timeout=10)
    assert [m.task_id for m in engine.broker.receive(10, 0)] == [orphan]
    failed = wait_for(lambda: (t := engine.get(dead)).status.terminal and t, timeout=10)
    assert failed.status is Status.FAILED and failed.error and failed.error.type == "DeadLettered"
    assert engine.get(orphan).status is Status.QUEUED
