"""AWS answers in wire format, given to a real botocore client in place of the HTTP
exchange: its parser, retry handler and event hooks run as against AWS. For what moto
never answers (throttling)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from botocore.awsrequest import AWSResponse


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def answer(status: int, body: dict[str, Any]) -> AWSResponse:
    """A JSON-protocol answer (DynamoDB, SQS)."""
    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "r"}
    return AWSResponse("https://aws", status, headers, Body(json.dumps(body).encode()))


def throttle(reason: str) -> AWSResponse:
    """DynamoDB's throttling answer, with its reason."""
    return answer(
        400,
        {
            "__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException",
            "message": "Throughput exceeds the current capacity.",
            "throttlingReasons": [{"reason": reason, "resource": "arn:aws:dynamodb:us-east-1:1:table/t"}],
        },
    )


def serve(client: Any, answers: list[AWSResponse]) -> list[AWSResponse]:
    """The client's next HTTP exchanges answer these, in order (then the last, again);
    returns the answers given so far."""
    sent: list[AWSResponse] = []

    def send(**_: Any) -> AWSResponse:
        sent.append(answers[min(len(sent), len(answers) - 1)])
        return sent[-1]

    client.meta.events.register_first("before-send", send, unique_id="aws-answers")
    return sent


@contextlib.contextmanager
def answering(client: Any, answers: list[AWSResponse]) -> Iterator[list[AWSResponse]]:
    """``serve`` for the length of a with block, then the client talks to its endpoint again."""
    try:
        yield serve(client, answers)
    finally:
        client.meta.events.unregister("before-send", unique_id="aws-answers")
