"""``conveyor init``: create the queues (one per priority), the DLQ, table and bucket, idempotently."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from conveyor.aws.backend import AwsBackend
from conveyor.aws.clients import error_code, translated
from conveyor.aws.dynamodb import INDEXES, KEYS_ONLY
from conveyor.model import PRIORITIES, Priority

if TYPE_CHECKING:
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


def _table(backend: AwsBackend, name: str) -> None:
    client = backend.dynamodb
    attributes: list[AttributeDefinitionTypeDef] = [
        {"AttributeName": key, "AttributeType": "S"} for key in ("id", *INDEXES.values())
    ]
    indexes: list[GlobalSecondaryIndexTypeDef] = [
        {
            "IndexName": index,
            "KeySchema": [
                {"AttributeName": key, "KeyType": "HASH"},
                {"AttributeName": "id", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY" if index in KEYS_ONLY else "ALL"},
        }
        for index, key in INDEXES.items()
    ]
    with translated("dynamodb CreateTable"):
        try:
            client.create_table(
                TableName=name,
                AttributeDefinitions=attributes,
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                GlobalSecondaryIndexes=indexes,
                BillingMode="PAY_PER_REQUEST",
            )
            client.get_waiter("table_exists").wait(
                TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
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
    _table(backend, s.table)
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
