"""Status shards (conveyor/aws/shards.py): each status spread over n status-index
partitions. tests/contract runs every store test on a sharded table too; this holds what
only sharding does: the stored values, and a table that changes its shard count."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from conveyor.aws import AwsBackend, shards
from conveyor.errors import InvalidCursor
from conveyor.model import Status, Task, new_id, now
from conveyor.settings import MAX_STATUS_SHARDS, Settings


def test_one_shard_stores_the_plain_status_and_more_store_a_shard_of_it():
    task_id = new_id()
    assert shards.stored(Status.QUEUED, task_id, 1) == "queued"
    value = shards.stored(Status.RUNNING, task_id, 8)
    name, _, shard = value.partition("#")
    assert name == "running" and 0 <= int(shard) < 8
    # A task keeps its shard through every status.
    assert shards.stored(Status.SUCCEEDED, task_id, 8) == f"succeeded#{shard}"
    assert shards.read(value) is Status.RUNNING and shards.read("failed") is Status.FAILED
    with pytest.raises(ValueError):
        shards.read("paused#1")


def test_ids_spread_evenly_over_the_shards():
    counts = Counter(shards.shard_of(new_id(), 8) for _ in range(4000))
    assert set(counts) == set(range(8))
    assert all(350 < n < 650 for n in counts.values()), counts  # 500 each, give or take


def test_lists_read_the_plain_partition_and_each_shard():
    assert shards.partitions(Status.QUEUED, 1) == ["queued"]
    assert shards.partitions(Status.QUEUED, 3) == ["queued", "queued#0", "queued#1", "queued#2"]


@pytest.mark.parametrize("value", [0, MAX_STATUS_SHARDS + 1])
def test_a_shard_count_out_of_range_fails_at_start_naming_the_variable(value):
    with pytest.raises(ValueError, match="CONVEYOR_STATUS_SHARDS must be 1 to 64"):
        Settings(status_shards=value)


def _raw_status(store, task_id: str) -> str:
    item = store.client.get_item(TableName=store.table, Key={"id": {"S": task_id}})["Item"]
    return str(item["status"]["S"])


def test_a_table_that_turns_sharding_on_keeps_every_task_listed_claimable_and_counted(settings_factory):
    """Tasks written with one shard (the plain status) and with four, on one table: the
    four-shard store lists, counts, claims, finishes, cancels and sweeps them all."""
    settings = settings_factory()
    before = AwsBackend(settings).store()
    old = [Task(id=new_id(), type="echo", payload={"n": i}) for i in range(4)]
    for task in old:
        before.create(task)
    running = before.claim(old[0].id, "echo", "w-old", now()).task
    assert running is not None and _raw_status(before, old[0].id) == "running"

    after = AwsBackend(Settings(**{**settings.__dict__, "status_shards": 4})).store()
    new = [Task(id=new_id(), type="echo", payload={"n": i}) for i in range(6)]
    after.create_many(new[:3])
    for task in new[3:]:
        after.create(task)
    assert all(_raw_status(after, t.id).startswith("queued#") for t in new)

    # Listed and counted across the plain partition and the shards, newest first.
    queued = [t.id for t in after.query(Status.QUEUED, limit=100).items]
    assert queued == sorted([t.id for t in old[1:] + new], reverse=True)
    assert after.count_by_status()[Status.QUEUED] == 9 and after.count_by_status()[Status.RUNNING] == 1
    assert [t.id for t in after.queued_before(now() + timedelta(seconds=1), limit=4)] == sorted(
        t.id for t in old[1:] + new
    )[:4]

    # An old record is claimed (its plain status matches), and moves to its shard.
    claimed = after.claim(old[1].id, "echo", "w-new", now()).task
    assert claimed is not None and _raw_status(after, old[1].id).startswith("running#")
    # The old store's running task is finished by the new store's conditions.
    done = after.finish(running, Status.SUCCEEDED, now())
    assert done is not None and _raw_status(after, old[0].id).startswith("succeeded#")
    assert after.get(old[0].id).status is Status.SUCCEEDED
    cancelled = after.cancel(old[2].id, now())
    assert cancelled.status is Status.CANCELLED and _raw_status(after, old[2].id).startswith("cancelled#")
    assert after.count_by_status() == {
        Status.QUEUED: 7,
        Status.RUNNING: 1,
        Status.SUCCEEDED: 1,
        Status.FAILED: 0,
        Status.CANCELLED: 1,
    }
    # Every task, paged two at a time, exactly once.
    seen: list[str] = []
    cursor = None
    while True:
        page = after.query(limit=2, cursor=cursor)
        seen += [t.id for t in page.items]
        if not (cursor := page.next_cursor):
            break
    assert seen == sorted([t.id for t in old + new], reverse=True)


def test_pages_stay_exact_when_a_shard_holds_more_than_its_share(settings_factory, monkeypatch):
    """Each shard's key is asked for a share of the page; a key holding more of the newest
    tasks than its share shortens the page (the floor), and the next page carries on."""
    store = AwsBackend(Settings(**{**settings_factory().__dict__, "status_shards": 4})).store()
    tasks = [Task(id=new_id(), type="a" if i % 3 else "b", payload={}) for i in range(30)]
    store.create_many(tasks)
    monkeypatch.setattr(store, "_share", lambda limit: 1)  # every key short of its share

    def every(**query) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            page = store.query(limit=7, cursor=cursor, **query)
            assert len(page.items) <= 7
            seen += [t.id for t in page.items]
            if not (cursor := page.next_cursor):
                return seen

    newest_first = sorted((t.id for t in tasks), reverse=True)
    assert every() == newest_first
    assert every(status=Status.QUEUED) == newest_first
    assert every(status=Status.QUEUED, task_type="b") == [
        i for i in newest_first if i in {t.id for t in tasks if t.type == "b"}
    ]


def test_a_sharded_lists_cursor_is_refused_by_another_list(settings_factory):
    """As without shards (tests/security/test_cursors.py): a cursor names its list."""
    store = AwsBackend(Settings(**{**settings_factory().__dict__, "status_shards": 4})).store()
    store.create_many([Task(id=new_id(), type="echo", payload={}) for _ in range(3)])
    every = store.query(limit=1).next_cursor
    queued = store.query(Status.QUEUED, limit=1).next_cursor
    assert every and queued
    assert store.query(Status.QUEUED, limit=1, cursor=queued).items
    for status, cursor in ((Status.QUEUED, every), (Status.FAILED, queued)):
        with pytest.raises(InvalidCursor):
            store.query(status, cursor=cursor)
    with pytest.raises(InvalidCursor):
        store.query(cursor=queued)
