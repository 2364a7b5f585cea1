"""The priority levels on SQS (the moto server): each message is received from, and
deleted on, its own level's queue."""

from __future__ import annotations

from conveyor.engine import Submission
from conveyor.model import PRIORITIES, Status
from tests.conftest import wait_for


def test_each_level_is_received_and_deleted_on_its_own_queue(runtime, start_worker):
    engine = runtime.engine
    for level in PRIORITIES:
        engine.lane(level).send("01ARZ3NDEKTSV4RRFFQ69G5FAV", "echo")
        [message] = wait_for(lambda lv=level: engine.lane(lv).receive(10, 1), timeout=10)
        assert message.lane is level
        engine.lane(level).delete_many([message.receipt])
    tasks = [
        engine.submit(Submission("echo", {"n": n}, priority=level))[0] for n, level in enumerate(PRIORITIES)
    ]
    start_worker()
    for task in tasks:
        wait_for(lambda t=task: engine.get(t.id).status is Status.SUCCEEDED, timeout=20)
    # Deleted where they came from: a delete sent to another queue would leave a message
    # in flight there, back after the visibility timeout.
    wait_for(lambda: all(engine.lane(level).depth().total == 0 for level in PRIORITIES), timeout=10)
