"""The embedded moto server's speed-ups answer what moto answers (conveyor/moto_server.py).

Each scenario runs in this process against moto's models twice, as moto ships and with
the patches the server applies, and the answers must be the same."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import boto3
import moto.backends
import moto.sqs.models as sqs_models
import pytest
from moto import mock_aws

from conveyor import moto_server


@pytest.fixture
def patch(monkeypatch: pytest.MonkeyPatch):
    """Apply the server's SQS patches, undone after the test."""
    # In-process moto, not the session's moto server other tests point boto3 at.
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS"):
        monkeypatch.delenv(name, raising=False)
    for owner, name in [
        (sqs_models, "unix_time"),
        (sqs_models, "unix_time_millis"),
        (sqs_models.SQSBackend, "is_message_valid_based_on_retention_period"),
        (moto.backends, "list_of_moto_modules"),
    ]:
        monkeypatch.setattr(owner, name, getattr(owner, name))  # so undo restores it
    return moto_server.make_sqs_bookkeeping_cheap


def retention_scenario() -> list[list[str]]:
    """Bodies delivered by each receive: an expired message, then a fresh one alone."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        url = sqs.create_queue(QueueName="short", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        queue = sqs_models.sqs_backends["123456789012"]["us-east-1"].queues["short"]
        answers = []
        sqs.send_message(QueueUrl=url, MessageBody="old")
        queue._messages[0].sent_timestamp = int((time.time() - 61) * 1000)  # past 60 s
        answers.append([m["Body"] for m in sqs.receive_message(QueueUrl=url).get("Messages", [])])
        queue._messages.clear()
        sqs.send_message(QueueUrl=url, MessageBody="new")
        answers.append([m["Body"] for m in sqs.receive_message(QueueUrl=url).get("Messages", [])])
        return answers


def test_retention_is_judged_as_moto_judges_it(patch):
    as_shipped = retention_scenario()
    patch()
    assert retention_scenario() == as_shipped == [[], ["new"]]


def test_the_clock_is_moto_s_clock(patch):
    from moto.core import utils

    patch()
    assert abs(sqs_models.unix_time() - utils.unix_time()) < 0.05
    assert abs(sqs_models.unix_time_millis() - utils.unix_time_millis()) < 50
    stamp = utils.utcnow()
    assert sqs_models.unix_time(stamp) == utils.unix_time(stamp)  # a given time: moto's own


def torn_reads(updates: int = 600) -> int:
    """GetItems that saw one attribute of an UpdateItem applied and not the other, while
    one thread sets ``a`` and ``b`` to the same value in one update and another reads."""
    with mock_aws():
        ddb = boto3.client(
            "dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        ddb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        key = {"id": {"S": "x"}}
        ddb.put_item(TableName="t", Item={**key, "a": {"N": "0"}, "b": {"N": "0"}})
        torn: list[dict[str, Any]] = []
        done = threading.Event()

        def write() -> None:
            for i in range(1, updates):
                ddb.update_item(
                    TableName="t",
                    Key=key,
                    UpdateExpression="SET a = :v, b = :v",
                    ExpressionAttributeValues={":v": {"N": str(i)}},
                )
            done.set()

        def read() -> None:
            while not done.is_set():
                item = ddb.get_item(TableName="t", Key=key)["Item"]
                if item["a"] != item["b"]:
                    torn.append(item)

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
        try:
            threads = [threading.Thread(target=write), threading.Thread(target=read)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
        return len(torn)


def test_a_read_never_sees_half_an_update(monkeypatch: pytest.MonkeyPatch):
    """Real DynamoDB applies an update atomically for readers too. As shipped, moto lets a
    GetItem see `a` updated and `b` not (2-3 of 400 reads here); the server's lock over
    whole requests closes that."""
    from moto.dynamodb.responses import DynamoHandler

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)
    for name in ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"):
        monkeypatch.setattr(DynamoHandler, name, getattr(DynamoHandler, name))
    for name in ("get_item", "batch_get_item", "transact_get_items", "query", "scan"):
        monkeypatch.setattr(DynamoHandler, name, getattr(DynamoHandler, name))
    moto_server.make_dynamodb_items_atomic()
    assert torn_reads() == 0
