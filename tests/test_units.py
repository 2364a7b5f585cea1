"""Write units priced from real writes: DynamoDB's sizing rules, and what each of the task
store's writes costs on the table ``conveyor init`` makes (over the moto server)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any, cast

import pytest

from conveyor.aws import AwsBackend
from conveyor.aws.dynamodb import TASK_INDEXES, DynamoTaskStore, DynamoWorkerRegistry
from conveyor.aws.units import Index, Layout, Meter, item_size, value_size
from conveyor.model import Progress, Status, Task, TaskError, WorkerInfo, new_id, now


def s(v: str) -> dict[str, str]:
    return {"S": v}


def test_sizes_follow_dynamodbs_rules():
    assert value_size(s("héllo")) == 6  # UTF-8 bytes
    assert value_size({"N": "12345"}) == 4 and value_size({"N": "-0.5"}) == 2
    assert value_size({"BOOL": True}) == 1 and value_size({"SS": ["ab", "c"]}) == 3
    assert value_size({"L": [s("ab")]}) == 3 + 1 + 2
    assert item_size({"id": s("x" * 26), "status": s("queued")}) == 2 + 26 + 6 + 6


LAYOUT = Layout(
    keys=("id",),
    indexes=(
        Index("by-status", ("status", "id"), "ALL"),
        Index("by-type", ("type", "id"), "KEYS_ONLY"),
        Index("sparse", ("open", "id"), "KEYS_ONLY"),
    ),
)


def test_what_a_write_moves_sets_its_units():
    item = {"id": s("a"), "status": s("queued"), "type": s("t")}
    assert LAYOUT.write_units(None, item) == Counter({"table": 1, "by-status": 1, "by-type": 1})
    moved = item | {"status": s("running")}
    assert LAYOUT.write_units(item, moved) == Counter({"table": 1, "by-status": 2})  # delete + put
    touched = moved | {"progress": s("1")}
    assert LAYOUT.write_units(moved, touched) == Counter({"table": 1, "by-status": 1})  # in place
    opened = item | {"open": s("y")}
    assert LAYOUT.write_units(item, opened) == Counter({"table": 1, "by-status": 1, "sparse": 1})
    assert LAYOUT.write_units(opened, None) == Counter(
        {"table": 1, "by-status": 1, "by-type": 1, "sparse": 1}
    )
    assert LAYOUT.write_units(item, item) == Counter({"table": 1})  # a write, if a no-op
    big = item | {"payload": s("x" * 1500)}  # over 1 KB: 2 units wherever the whole item goes
    assert LAYOUT.write_units(None, big) == Counter({"table": 2, "by-status": 2, "by-type": 1})


# Status shards (conveyor/aws/shards.py) change a task's status-index key, not what a
# write moves: the same units.
@pytest.fixture(params=[1, 4], ids=["one-status-shard", "four-status-shards"])
def metered(settings_factory, request) -> tuple[Meter, DynamoTaskStore, DynamoWorkerRegistry]:
    settings = settings_factory()
    client = AwsBackend(settings).dynamodb
    meter = Meter(client, settings.table)
    as_client = cast(Any, meter)
    return (
        meter,
        DynamoTaskStore(as_client, settings.table, 3600, status_shards=request.param),
        DynamoWorkerRegistry(as_client, settings.table),
    )


def test_a_small_task_costs_nine_units_from_create_to_finish(metered):
    meter, store, _ = metered
    task = Task(id=new_id(), type="echo", payload={"n": 1})
    store.create(task)
    claimed = store.claim(task.id, "echo", "worker-1", now()).task
    assert claimed is not None
    store.finish(claimed, Status.SUCCEEDED, now(), result={"ok": True})
    create, claim, finish = (units for _, units in meter.writes)
    assert create == Counter({"table": 1, "status-index": 1, "type-index": 1})
    assert claim == finish == Counter({"table": 1, "status-index": 2})
    assert meter.total() == 9 and set(meter.units) == {"table", *TASK_INDEXES}


def test_a_failed_claim_is_billed_on_the_table_alone(metered):
    meter, store, _ = metered
    task = Task(id=new_id(), type="echo", payload={})
    store.create(task)
    meter.units.clear()
    store.claim(task.id, "echo", "w", now())
    meter.units.clear()
    assert store.claim(task.id, "echo", "w", now()).task is None  # already running
    assert meter.units == Counter({"table": 1})


def test_no_item_but_a_task_enters_a_task_index(metered):
    """Worker items (and their heartbeats), idempotency items and schedule items stay out of
    the indexes the task lists read."""
    meter, store, workers = metered
    info = WorkerInfo("w1", "host", 1, now(), now(), 0, 8, "0")
    workers.heartbeat(info, 60)
    workers.heartbeat(replace(info, last_heartbeat=now(), in_flight=3), 60)
    store.create(Task(id=new_id(), type="echo", payload={}, idempotency_key="k1"), body_hash="h")
    store.advance_schedule("ns/nightly", now())
    assert not set(meter.units) & set(TASK_INDEXES)
    # A heartbeat after the first rewrites the worker item alone: its index entry stays.
    first, second = (units for action, units in meter.writes[:2])
    assert first == Counter({"table": 1, "fleet-index": 1}) and second == Counter({"table": 1})


def test_the_other_task_writes_cost_what_the_layout_table_says(metered):
    """docs/ARCHITECTURE.md: progress rewrites the ALL entry in place (2); a requeue and a
    retry move status-index (3 each)."""
    meter, store, _ = metered
    task = Task(id=new_id(), type="echo", payload={})
    store.create(task)
    claimed = store.claim(task.id, "echo", "w", now()).task
    assert claimed is not None
    meter.writes.clear()
    assert store.record_progress(claimed, Progress(0.5, "half", claimed.attempts, now()), ())
    assert store.requeue(claimed, now(), TaskError("E", "m"), now())
    again = store.claim(task.id, "echo", "w", now()).task
    assert again is not None
    store.finish(again, Status.FAILED, now(), error=TaskError("E", "m"))
    store.retry(task.id, now())
    progress, requeue, _claim, _finish, retry = (units for _, units in meter.writes)
    assert progress == Counter({"table": 1, "status-index": 1})
    assert requeue == retry == Counter({"table": 1, "status-index": 2})
