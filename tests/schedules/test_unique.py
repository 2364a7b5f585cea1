"""A schedule whose task type is unique: a slot whose key is held by an active task is
skipped (as concurrencyPolicy Forbid would), counted and never retried; replace fires."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from conveyor.metrics import SchedulerMetrics
from conveyor.model import Status
from tests.conftest import make_settings
from tests.schedules.test_firing import T0, Clock, Schedules, finish, fires, scheduler, spec, tasks
from tests.support.engines import memory_engine
from tests.support.unique import unique_types


@pytest.mark.parametrize("task_type", ["latest", "once"])
def test_a_slot_whose_unique_key_is_held_is_skipped_and_the_next_free_one_fires(
    task_type: str, tmp_path: Path
) -> None:
    types = str(unique_types(tmp_path))
    eng = memory_engine(make_settings(tasktypes=types), types)
    clock, source = Clock(T0), Schedules(spec(task_type=task_type, payload={"user": "ada"}))
    metrics = SchedulerMetrics(CollectorRegistry())
    s = scheduler(eng, source, clock, metrics=metrics)
    s.tick()
    clock.advance(seconds=60)
    [fired] = s.tick()
    assert fired.created
    clock.advance(seconds=60)
    [skipped] = s.tick()
    assert (skipped.outcome, skipped.task_id, skipped.created) == ("skipped_overlap", fired.task_id, False)
    assert fires(metrics, "skipped_overlap") == 1 and fires(metrics, "submitted") == 1
    state = eng.store.schedule_state("default/s")
    assert state.last_slot == clock.at.replace(second=0) and state.last_task_id == fired.task_id
    assert s.tick() == []  # the skipped slot is done with, not retried
    finish(eng, fired.task_id)
    clock.advance(seconds=60)
    [again] = s.tick()
    assert again.created and len(tasks(eng)) == 2


def test_a_replace_type_fires_each_slot_cancelling_the_queued_one(tmp_path: Path) -> None:
    types = str(unique_types(tmp_path))
    eng = memory_engine(make_settings(tasktypes=types), types)
    clock, source = Clock(T0), Schedules(spec(task_type="debounce", payload={"user": "ada"}))
    s = scheduler(eng, source, clock)
    s.tick()
    clock.advance(seconds=60)
    [first] = s.tick()
    clock.advance(seconds=60)
    [second] = s.tick()
    assert second.created and second.task_id != first.task_id
    assert eng.store.get(first.task_id).status is Status.CANCELLED
