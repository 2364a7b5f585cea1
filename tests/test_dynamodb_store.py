"""What only the DynamoDB store does (tests/contract holds what every store does).

Batch calls: DynamoDB may leave part of a batch unprocessed (throttling) and answer 200;
the store re-sends that part, backing off, and gives up with Unavailable (a 503 at the
API) rather than silently dropping it. Lists by status and type read a bounded number of
index pages per request."""

from __future__ import annotations

import pytest

from conveyor.aws import AwsBackend, dynamodb
from conveyor.errors import Conflict, Unavailable
from conveyor.model import Status, Task, new_id


def test_the_unprocessed_part_is_sent_again_with_growing_pauses(monkeypatch):
    pauses: list[float] = []
    monkeypatch.setattr(dynamodb.time, "sleep", pauses.append)
    sent: list[dict] = []
    left = [{"t": ["b", "c"]}, {"t": ["c"]}, {}]

    def call(RequestItems):
        sent.append(RequestItems)
        return {"UnprocessedItems": left[len(sent) - 1]}

    answers = dynamodb._until_processed("BatchWriteItem", call, {"t": ["a", "b", "c"]})
    assert sent == [{"t": ["a", "b", "c"]}, {"t": ["b", "c"]}, {"t": ["c"]}]
    assert len(answers) == 3 and pauses == [0.05, 0.1]


def test_a_batch_never_processed_is_unavailable_not_dropped(monkeypatch):
    monkeypatch.setattr(dynamodb.time, "sleep", lambda _: None)

    def never(RequestItems):
        return {"UnprocessedKeys": RequestItems}

    with pytest.raises(Unavailable, match="BatchGetItem"):
        dynamodb._until_processed("BatchGetItem", never, {"t": 1})


def test_a_status_and_type_list_reads_a_bounded_number_of_pages(settings_factory, monkeypatch):
    store = AwsBackend(settings_factory()).store()
    rare = Task(id=new_id(), type="rare", payload={})
    store.create(rare)  # the oldest: behind 150 newer tasks of another type
    store.create_many([Task(id=new_id(), type="common", payload={}) for _ in range(150)])
    queries = []
    original = store.client.query
    monkeypatch.setattr(store.client, "query", lambda **a: queries.append(a) or original(**a))
    monkeypatch.setattr(dynamodb, "FILTERED_PAGES", 1)
    first = store.query(Status.QUEUED, "rare", limit=5)
    # One page of 100 evaluated holds none of it: an empty answer that says "go on".
    assert first.items == [] and first.next_cursor and len(queries) == 1
    second = store.query(Status.QUEUED, "rare", limit=5, cursor=first.next_cursor)
    assert [t.id for t in second.items] == [rare.id] and second.next_cursor is None


def test_a_duplicate_create_is_told_apart_without_a_second_read(settings_factory, monkeypatch):
    """The failed PutItem brings back the item it met (ReturnValuesOnConditionCheckFailure),
    which is enough to tell a lost-answer retry from another task under the same id."""
    store = AwsBackend(settings_factory()).store()
    task = Task(id=new_id(), type="echo", payload={"n": 1})
    store.create(task)
    calls: list[str] = []
    for name in ("get_item", "query", "batch_get_item", "transact_write_items"):
        monkeypatch.setattr(store.client, name, lambda _n=name, **_: calls.append(_n))
    assert store.create(task) == (task, True)
    with pytest.raises(Conflict):
        store.create(task.with_(payload={"n": 2}))
    assert calls == []


def test_the_unfiltered_list_reads_each_status_partition_once_unfiltered(settings_factory, monkeypatch):
    """Every task newest first: one Query per status partition, none filtered, none of a
    former index, each reading at most ``limit`` entries, and no BatchGetItem."""
    store = AwsBackend(settings_factory()).store()
    store.create_many([Task(id=new_id(), type="common", payload={}) for _ in range(30)])
    calls: list[tuple[str, dict]] = []
    for name in ("query", "batch_get_item", "scan"):
        original = getattr(store.client, name)
        monkeypatch.setattr(
            store.client, name, lambda _o=original, _n=name, **a: calls.append((_n, a)) or _o(**a)
        )
    page = store.query(limit=7)
    assert len(page.items) == 7 and page.next_cursor
    assert [n for n, _ in calls] == ["query"] * len(Status)
    assert {a["IndexName"] for _, a in calls} == {"status-index"}
    assert all("FilterExpression" not in a and a["Limit"] == 7 for _, a in calls)
    calls.clear()
    rest = store.query(limit=50, cursor=page.next_cursor)
    assert len(rest.items) == 23 and rest.next_cursor is None
    assert all(a["KeyConditionExpression"].endswith("id < :below") for _, a in calls)


def test_the_merged_list_keeps_its_order_when_a_partition_answers_short(settings_factory, monkeypatch):
    """DynamoDB ends a Query page at 1 MB whatever ``Limit`` says: a partition answering
    short may hold newer tasks than another partition's; none of those is answered before
    it, and paging on still lists every task once, newest first."""
    store = AwsBackend(settings_factory()).store()
    made = [Task(id=new_id(), type="t", payload={}) for _ in range(12)]
    for n, task in enumerate(made):
        store.create(task)
        if n % 2:
            claimed = store.claim(task.id, "t", "w", task.created_at).task
            assert claimed is not None
            store.finish(claimed, Status.SUCCEEDED, task.created_at)
    original = store.client.query

    def short(**args):
        out = original(**args)
        if args["ExpressionAttributeValues"][":v"]["S"] == "succeeded" and len(out["Items"]) > 2:
            out["Items"] = out["Items"][:2]  # as if the third item crossed 1 MB
            out["LastEvaluatedKey"] = {k: out["Items"][-1][k] for k in ("id", "status")}
        return out

    monkeypatch.setattr(store.client, "query", short)
    seen, cursor = [], None
    while True:
        page = store.query(limit=5, cursor=cursor)
        seen += [t.id for t in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
        assert len(seen) <= len(made)
    assert seen == [t.id for t in reversed(made)]


def test_a_claim_on_a_messages_copy_is_one_write_reading_nothing_back(settings_factory, monkeypatch):
    """The copy is the record (the write's condition proves it), so the claim needs no
    item back; a copy the record does not match falls back to the claim by id."""
    from conveyor.model import decode_message, encode_message, now

    store = AwsBackend(settings_factory()).store()
    task = Task(id=new_id(), type="echo", payload={"n": 1})
    store.create(task)
    copy = decode_message(encode_message(task.id, task.type, task))[2]
    calls: list[dict] = []
    original = store.client.update_item

    def update_item(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(store.client, "update_item", update_item)
    assert store.claim(task.id, "echo", "w1", now(), copy).task is not None
    assert [c["ReturnValues"] for c in calls] == ["NONE"]
    other = Task(id=new_id(), type="echo", payload={"n": 2})
    store.create(other)
    calls.clear()
    stale = decode_message(encode_message(other.id, other.type, other.with_(payload={"n": 3})))[2]
    claimed = store.claim(other.id, "echo", "w1", now(), stale).task
    assert claimed is not None and claimed.payload == {"n": 2}
    assert [c["ReturnValues"] for c in calls] == ["NONE", "ALL_NEW"]


def test_a_record_read_back_gives_the_copy_its_create_wrote():
    """An idempotent repeat re-sends the stored record's copy: it must match the digest
    the create wrote, or its claim would fall back to a read."""
    from datetime import timedelta

    from conveyor.model import Priority, copy_digest, creation_copy, now

    at = now()
    task = Task(
        id=new_id(),
        type="echo",
        payload={"n": 1.5, "s": "é", "l": [None, True]},
        created_at=at,
        updated_at=at,
        run_at=at + timedelta(seconds=30),
        submitter_scopes=frozenset({"tasks:submit"}),
        submitter="ci",
        notify_url="https://hooks.example/x",
        idempotency_key="abc",
        unique_key="u",
        priority=Priority.LOW,
    )
    item = dynamodb.task_to_item(task)
    again = dynamodb.item_to_task(item)
    assert item["copy_digest"]["S"] == copy_digest(again.id, creation_copy(again))


def test_failing_a_record_that_cannot_be_read_leaves_it_alone(settings_factory):
    from conveyor.model import TaskError, now

    store = AwsBackend(settings_factory()).store()
    task_id = new_id()
    store.client.put_item(
        TableName=store.table,
        Item={"id": {"S": task_id}, "kind": {"S": "task"}, "status": {"S": "no-such-status"}},
    )
    assert store.fail_unfinished(task_id, TaskError("WorkerLost", "gone"), now()) is None
