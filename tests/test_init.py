"""`conveyor init` creates every resource, with the redrive policy and TTL, idempotently."""

from __future__ import annotations

import json

from click.testing import CliRunner

from conveyor.aws import AwsBackend
from conveyor.aws.dynamodb import INDEXES
from conveyor.aws.provision import provision
from conveyor.cli import main
from conveyor.model import Task, WorkerInfo, new_id, to_rfc3339
from conveyor.model import now as utcnow
from tests.conftest import make_settings


def test_init_is_idempotent_and_complete(moto_server, monkeypatch):
    s = make_settings(max_receive_count=7, visibility_timeout=45)
    for key, value in {"QUEUE": s.queue, "DLQ": s.dlq, "TABLE": s.table, "BUCKET": s.bucket,
                       "MAX_RECEIVE_COUNT": "7", "VISIBILITY_TIMEOUT": "45"}.items():  # fmt: skip
        monkeypatch.setenv(f"CONVEYOR_{key}", value)
    first = CliRunner().invoke(main, ["init"], catch_exceptions=False)
    second = CliRunner().invoke(main, ["init"], catch_exceptions=False)
    assert first.exit_code == second.exit_code == 0
    assert json.loads(first.stdout) == json.loads(second.stdout)
    backend = AwsBackend(s)
    made = json.loads(first.stdout)
    # One queue per priority level, each dead-lettering into the one DLQ.
    for key, name in (("queue", s.queue), ("queue_high", f"{s.queue}-high"), ("queue_low", f"{s.queue}-low")):
        assert made[key] == backend.queue_url(name)
        attrs = backend.sqs.get_queue_attributes(QueueUrl=made[key], AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith(":" + s.dlq) and int(redrive["maxReceiveCount"]) == 7
        assert attrs["VisibilityTimeout"] == "45" and attrs["ReceiveMessageWaitTimeSeconds"] == "20"
    table = backend.dynamodb.describe_table(TableName=s.table)["Table"]
    projections = {i["IndexName"]: i["Projection"]["ProjectionType"] for i in table["GlobalSecondaryIndexes"]}
    assert projections == {"fleet-index": "KEYS_ONLY", "status-index": "ALL", "type-index": "KEYS_ONLY"}
    ttl = backend.dynamodb.describe_time_to_live(TableName=s.table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"
    backend.s3.head_bucket(Bucket=s.bucket)


def test_init_brings_a_table_of_the_earlier_layout_to_this_one(moto_server):
    """A table made with ``kind-index`` (every task, one unit per create) gets
    ``fleet-index`` and loses ``kind-index``; the items written before stay listed, and a
    worker written before is listed again from its next heartbeat."""
    s = make_settings()
    backend = AwsBackend(s)
    client = backend.dynamodb
    old = {"kind-index": "kind", "status-index": "status", "type-index": "type"}
    client.create_table(
        TableName=s.table,
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("id", *old.values())],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": index,
                "KeySchema": [
                    {"AttributeName": key, "KeyType": "HASH"},
                    {"AttributeName": "id", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL" if index == "status-index" else "KEYS_ONLY"},
            }
            for index, key in old.items()
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    store = backend.store()
    before = [Task(id=new_id(), type=t, payload={}) for t in ("a", "b", "a")]
    for task in before:
        store.create(task)
    beat = WorkerInfo(id="w1", host="h", pid=1, started_at=utcnow(), last_heartbeat=utcnow(),
                      in_flight=0, concurrency=8, version="0")  # fmt: skip
    old_worker = {
        "id": "worker#w1", "kind": "worker", "host": "h", "started_at": to_rfc3339(beat.started_at),
        "last_heartbeat": to_rfc3339(beat.last_heartbeat), "version": "0",
    }  # fmt: skip
    numbers = {"pid": "1", "in_flight": "0", "concurrency": "8"}
    client.put_item(  # a worker item as the earlier version wrote it: no ``fleet``
        TableName=s.table,
        Item={k: {"S": v} for k, v in old_worker.items()} | {k: {"N": v} for k, v in numbers.items()},
    )

    provision(backend, bucket=False)
    provision(backend, bucket=False)  # converged: nothing left to change

    table = client.describe_table(TableName=s.table)["Table"]
    assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == set(INDEXES)
    assert [t.id for t in store.query(limit=10).items] == [t.id for t in reversed(before)]
    assert [t.id for t in store.query(task_type="a").items] == [before[2].id, before[0].id]
    registry = backend.workers()
    assert registry.workers() == []  # not yet beaten under this version
    registry.heartbeat(beat, 60)
    assert [w.id for w in registry.workers()] == ["w1"]
