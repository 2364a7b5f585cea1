"""`conveyor init` creates every resource, with the redrive policy and TTL, idempotently."""

from __future__ import annotations

import json

from click.testing import CliRunner

from conveyor.aws import AwsBackend
from conveyor.cli import main
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
    assert projections == {"kind-index": "KEYS_ONLY", "status-index": "ALL", "type-index": "KEYS_ONLY"}
    ttl = backend.dynamodb.describe_time_to_live(TableName=s.table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"
    backend.s3.head_bucket(Bucket=s.bucket)
