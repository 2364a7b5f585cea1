"""``conveyor init``: create the queues (one per priority), the DLQ, table and bucket, idempotently."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from conveyor.aws.backend import AwsBackend
from conveyor.aws.clients import error_code, translated
from conveyor.aws.dynamodb import INDEXES, KEYS_ONLY, OBSOLETE_INDEXES
from conveyor.model import PRIORITIES, Priority

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient
    from types_boto3_dynamodb.type_defs import AttributeDefinitionTypeDef, GlobalSecondaryIndexTypeDef
    from types_boto3_sqs.literals import QueueAttributeNameType


def _queue(backend: AwsBackend, name: str, attributes: Mapping[QueueAttributeNameType, str]) -> str:
    with translated("sqs CreateQueue"):
        try:
            url = backend.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        except ClientError as exc:
            if error_code(exc) not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            # Exists with other attributes: bring them to what this Conveyor expects.
            url = backend.sqs.get_queue_url(QueueName=name)["QueueUrl"]
            backend.sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return str(url)


def _name(queue: str) -> str:
    """A queue setting may be a URL (real AWS); CreateQueue wants the name."""
    return queue.rstrip("/").rsplit("/", 1)[-1]


def _index(index: str, key: str) -> GlobalSecondaryIndexTypeDef:
    return {
        "IndexName": index,
        "KeySchema": [
            {"AttributeName": key, "KeyType": "HASH"},
            {"AttributeName": "id", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "KEYS_ONLY" if index in KEYS_ONLY else "ALL"},
    }


def _settled(client: DynamoDBClient, name: str) -> dict[str, Any]:
    """The table once it and every index are ACTIVE (an index being built or deleted
    refuses the next index change)."""
    for _ in range(3600):
        table = client.describe_table(TableName=name)["Table"]
        indexes = table.get("GlobalSecondaryIndexes", [])
        busy = [i for i in indexes if i.get("IndexStatus", "ACTIVE") != "ACTIVE"]
        if table.get("TableStatus") == "ACTIVE" and not busy:
            return dict(table)
        time.sleep(1)
    raise TimeoutError(f"dynamodb table {name}: an index change did not finish within an hour")


def _converge(client: DynamoDBClient, name: str) -> None:
    """Bring a table made by an earlier version to this layout: add each missing index
    (DynamoDB builds it from the items already there that carry its key attribute), then
    delete the indexes this layout no longer reads. One index change per UpdateTable."""
    table = _settled(client, name)
    present = {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])}
    for index, key in INDEXES.items():
        if index in present:
            continue
        client.update_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("id", key)],
            GlobalSecondaryIndexUpdates=[{"Create": _index(index, key)}],
        )
        _settled(client, name)
    for index in OBSOLETE_INDEXES:
        if index in present:
            client.update_table(
                TableName=name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": index}}]
            )
            _settled(client, name)


def ensure_table(client: DynamoDBClient, name: str) -> None:
    """The task table in this layout: created, or an existing one converged."""
    attributes: list[AttributeDefinitionTypeDef] = [
        {"AttributeName": key, "AttributeType": "S"} for key in ("id", *INDEXES.values())
    ]
    with translated("dynamodb CreateTable"):
        try:
            client.create_table(
                TableName=name,
                AttributeDefinitions=attributes,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                GlobalSecondaryIndexes=[_index(index, key) for index, key in INDEXES.items()],
                BillingMode="PAY_PER_REQUEST",
            )
            client.get_waiter("table_exists").wait(
                TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
            _converge(client, name)
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            client.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
            )


def _bucket(backend: AwsBackend, name: str) -> None:
    args: dict[str, Any] = {"Bucket": name}
    if backend.settings.region != "us-east-1":
        args["CreateBucketConfiguration"] = {"LocationConstraint": backend.settings.region}
    with translated("s3 CreateBucket"):
        try:
            backend.s3.create_bucket(**args)
        except ClientError as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


def provision(backend: AwsBackend, bucket: bool = True) -> dict[str, str]:
    """Create (or converge) every AWS resource Conveyor uses; returns their names/URLs."""
    s = backend.settings
    dlq_url = _queue(backend, _name(s.dlq), {"MessageRetentionPeriod": str(14 * 24 * 3600)})
    with translated("sqs GetQueueAttributes"):
        dlq_arn = backend.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    attributes: dict[QueueAttributeNameType, str] = {
        "VisibilityTimeout": str(s.visibility_timeout),
        "MessageRetentionPeriod": str(14 * 24 * 3600),
        "ReceiveMessageWaitTimeSeconds": "20",
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(s.max_receive_count)}
        ),
    }
    # One queue per priority level, all dead-lettering into the one DLQ.
    urls = {p: _queue(backend, _name(s.queue_of(p)), attributes) for p in PRIORITIES}
    ensure_table(backend.dynamodb, s.table)
    if bucket:
        _bucket(backend, s.bucket)
    return {
        "queue": urls[Priority.NORMAL],
        "queue_high": urls[Priority.HIGH],
        "queue_low": urls[Priority.LOW],
        "dlq": dlq_url,
        "table": s.table,
        "bucket": s.bucket,
    }
