"""The broker on SQS. Messages carry the task id and type, and a task just created carries
a copy of itself (``encode_message``): the record stays the truth, the claim checks the copy."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conveyor.aws.clients import translated
from conveyor.errors import Unavailable
from conveyor.model import Message, Priority, QueueDepth, Task, decode_message, encode_message
from conveyor.ports import BROKER_MAX_DELAY_SECONDS, BROKER_MAX_VISIBILITY_SECONDS, Outgoing

if TYPE_CHECKING:
    from types_boto3_sqs import SQSClient
    from types_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        MessageAttributeValueTypeDef,
        SendMessageBatchRequestEntryTypeDef,
        SendMessageRequestTypeDef,
    )

# SQS allows 10 message attributes; the trace context needs one to three (traceparent,
# tracestate, baggage). More than that is not a trace context: it is left out.
MAX_TRACE_ATTRIBUTES = 5


def _attributes(trace_context: Mapping[str, str] | None) -> dict[str, MessageAttributeValueTypeDef]:
    """The message attributes of a send: none when tracing is off."""
    items = list((trace_context or {}).items())[:MAX_TRACE_ATTRIBUTES]
    return {k: {"DataType": "String", "StringValue": v} for k, v in items if v}


def _trace_context(raw: Mapping[str, Any]) -> dict[str, str]:
    return {
        k: a["StringValue"]
        for k, a in raw.get("MessageAttributes", {}).items()
        if a.get("DataType") == "String" and "StringValue" in a
    }


class SqsBroker:
    """``url`` may be a callable: the queue URL is then looked up on first use, so a
    process can start (and report unready) while SQS is unreachable."""

    def __init__(
        self, client: SQSClient, url: str | Callable[[], str], lane: Priority = Priority.NORMAL
    ) -> None:
        self.client = client
        self._url = url
        self.lane = lane  # stamped on each message received, so replies go to this queue

    @property
    def url(self) -> str:
        if callable(self._url):
            self._url = self._url()
        return self._url

    def send(
        self,
        task_id: str,
        task_type: str,
        delay_seconds: int = 0,
        trace_context: Mapping[str, str] | None = None,
        task: Task | None = None,
    ) -> None:
        request: SendMessageRequestTypeDef = {
            "QueueUrl": self.url,
            "MessageBody": encode_message(task_id, task_type, task),
            "DelaySeconds": max(0, min(BROKER_MAX_DELAY_SECONDS, int(delay_seconds))),
        }
        if attributes := _attributes(trace_context):
            request["MessageAttributes"] = attributes
        with translated("sqs SendMessage"):
            self.client.send_message(**request)

    def send_many(
        self, items: Sequence[Outgoing], trace_context: Mapping[str, str] | None = None
    ) -> list[str]:
        failed: list[str] = []
        attributes = _attributes(trace_context)
        for start in range(0, len(items), 10):
            chunk = items[start : start + 10]
            entries: list[SendMessageBatchRequestEntryTypeDef] = []
            for n, (task_id, task_type, delay, task) in enumerate(chunk):
                entry: SendMessageBatchRequestEntryTypeDef = {
                    "Id": str(n),
                    "MessageBody": encode_message(task_id, task_type, task),
                    "DelaySeconds": max(0, min(BROKER_MAX_DELAY_SECONDS, int(delay))),
                }
                if attributes:
                    entry["MessageAttributes"] = attributes
                entries.append(entry)
            try:
                with translated("sqs SendMessageBatch"):
                    out = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
            except Unavailable:
                failed += [item[0] for item in chunk]
                continue
            failed += [chunk[int(f["Id"])][0] for f in out.get("Failed", [])]
        return failed

    def receive(self, max_messages: int, wait_seconds: int) -> list[Message]:
        with translated("sqs ReceiveMessage"):
            out = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max(1, min(10, max_messages)),
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                MessageAttributeNames=["All"],  # only the trace context is ever set
            )
        messages: list[Message] = []
        for raw in out.get("Messages", []):
            attrs = raw.get("Attributes", {})
            try:
                task_id, task_type, copy = decode_message(raw["Body"])
            except ValueError:
                task_id, task_type, copy = "", "", None  # the worker deletes what it cannot read
            sent = attrs.get("SentTimestamp")
            messages.append(
                Message(
                    task_id=task_id,
                    task_type=task_type,
                    receipt=raw["ReceiptHandle"],
                    receive_count=int(attrs.get("ApproximateReceiveCount", 1)),
                    sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
                    trace_context=_trace_context(raw),
                    lane=self.lane,
                    copy=copy,
                )
            )
        return messages

    def delete_many(self, receipts: Iterable[str]) -> None:
        handles = list(receipts)
        for start in range(0, len(handles), 10):
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(handles[start : start + 10])
            ]
            with translated("sqs DeleteMessageBatch"):
                self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)

    def change_visibility(self, receipt: str, seconds: int) -> None:
        with translated("sqs ChangeMessageVisibility"):
            self.client.change_message_visibility(
                QueueUrl=self.url,
                ReceiptHandle=receipt,
                VisibilityTimeout=max(0, min(BROKER_MAX_VISIBILITY_SECONDS, int(seconds))),
            )

    def change_visibility_many(self, items: Sequence[tuple[str, int]]) -> None:
        for start in range(0, len(items), 10):
            visibility: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {
                    "Id": str(n),
                    "ReceiptHandle": receipt,
                    "VisibilityTimeout": max(0, min(BROKER_MAX_VISIBILITY_SECONDS, int(seconds))),
                }
                for n, (receipt, seconds) in enumerate(items[start : start + 10])
            ]
            with translated("sqs ChangeMessageVisibilityBatch"):
                self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=visibility)

    def depth(self) -> QueueDepth:
        with translated("sqs GetQueueAttributes"):
            attrs = self.client.get_queue_attributes(
                QueueUrl=self.url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
        return QueueDepth(
            visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    def ping(self) -> None:
        with translated("sqs GetQueueAttributes"):
            self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
