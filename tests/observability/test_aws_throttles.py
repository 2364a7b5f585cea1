"""Throttled AWS answers are counted, each attempt, by service, operation and reason
(``conveyor_aws_throttled_total``): botocore retries them quietly, so without this count a
table or index past its write rate shows only once calls start failing.

The answers are AWS's wire format, given to the real botocore client (its parser, retry
handler and event hooks) in place of the HTTP exchange; moto never throttles."""

from __future__ import annotations

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry

from conveyor.aws import AwsBackend
from conveyor.metrics import AwsMetrics
from tests.conftest import make_settings
from tests.support.aws_answers import Body, answer, serve, throttle


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> AwsBackend:
    monkeypatch.setattr("botocore.endpoint.time.sleep", lambda _: None)  # retries' backoff
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return AwsBackend(make_settings())


def throttled(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["service"], s.labels["operation"], s.labels["reason"]): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "conveyor_aws_throttled_total"
    }


def test_each_throttled_attempt_is_counted_with_dynamodbs_reason(backend: AwsBackend) -> None:
    registry = CollectorRegistry()
    backend.count_throttles(AwsMetrics(registry).count_throttle)
    hot_key = throttle("IndexWriteKeyRangeThroughputExceeded")
    sent = serve(backend.dynamodb, [hot_key])
    with pytest.raises(ClientError, match="ThrottlingException"):
        backend.dynamodb.update_item(TableName="t", Key={"id": {"S": "x"}})
    assert len(sent) > 1  # botocore retried, and every attempt was refused
    assert throttled(registry) == {
        ("dynamodb", "UpdateItem", "IndexWriteKeyRangeThroughputExceeded"): len(sent)
    }


def test_a_throttle_without_a_reason_counts_its_code_and_a_retry_that_succeeds_counts_once(
    backend: AwsBackend,
) -> None:
    registry = CollectorRegistry()
    backend.count_throttles(AwsMetrics(registry).count_throttle)
    refused = answer(400, {"__type": "com.amazonaws.sqs#RequestThrottled", "message": "slow down"})
    sent_ok = answer(200, {"MessageId": "m", "MD5OfMessageBody": "ac6d1a5a2d5b1dfbbdd1d7d8b8ba5c5b"})
    serve(backend.sqs, [refused, sent_ok])
    backend.sqs.send_message(QueueUrl="https://sqs.us-east-1.amazonaws.com/1/q", MessageBody="hi")
    assert throttled(registry) == {("sqs", "SendMessage", "RequestThrottled"): 1}


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "ConditionalCheckFailedException"), (500, "InternalServerError"), (400, "ValidationException")],
)
def test_other_errors_are_not_throttles(backend: AwsBackend, status: int, code: str) -> None:
    """A refused condition is the exactly-once claim working, a 5xx an outage: neither says
    the table is short of write rate."""
    registry = CollectorRegistry()
    backend.count_throttles(AwsMetrics(registry).count_throttle)
    serve(backend.dynamodb, [answer(status, {"__type": f"com.amazonaws.dynamodb.v20120810#{code}"})])
    with pytest.raises(ClientError):
        backend.dynamodb.update_item(TableName="t", Key={"id": {"S": "x"}})
    assert throttled(registry) == {}


def test_the_s3_client_made_later_is_counted_too(backend: AwsBackend) -> None:
    counted: list[tuple[str, str, str]] = []
    backend.count_throttles(lambda *labels: counted.append(labels))
    slow_down = AWSResponse(
        "https://s3",
        503,
        {"Content-Type": "application/xml"},
        Body(b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"),
    )
    serve(backend.s3, [slow_down])
    with pytest.raises(ClientError, match="SlowDown"):
        backend.s3.head_bucket(Bucket="b")
    assert counted and set(counted) == {("s3", "HeadBucket", "SlowDown")}
