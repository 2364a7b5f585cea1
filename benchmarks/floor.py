"""The floor: plain boto3 making only the calls Conveyor's guarantees need, per task.

- submit: ``PutItem`` (conditional: the record is the truth) then ``SendMessage``
  (batched: ``BatchWriteItem`` of 25, ``SendMessageBatch`` of 10);
- worker: ``ReceiveMessage`` (up to 10, only for free slots, long poll), a conditional
  ``UpdateItem`` claim (queued -> running: a duplicate delivery never runs twice), the
  handler, a conditional ``UpdateItem`` finish (running by me -> succeeded), and
  ``DeleteMessageBatch`` of the finished messages.

No indexes, no heartbeat, no metrics, no retries, no registry, no validation: nothing a
product needs beyond the guarantees. Whatever Conveyor spends above this is overhead.

Worker: ``python -m benchmarks.floor --endpoint URL --queue-url URL --table T``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue as queues
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config

from benchmarks.events import emit

TABLE_ATTRIBUTES = [{"AttributeName": "id", "AttributeType": "S"}]
# The batching rules of Conveyor's worker (worker/runtime.py), so the floor's requests
# per task are the least those rules allow.
RECEIVE_GATHER_SECONDS = 0.05
DELETE_GATHER_SECONDS = 1.0


def clients(endpoint: str, pool: int = 32) -> tuple[Any, Any]:
    config = Config(
        region_name="us-east-1", max_pool_connections=pool, read_timeout=60, retries={"mode": "standard"}
    )
    session = boto3.session.Session()
    return (
        session.client("sqs", endpoint_url=endpoint, config=config),
        session.client("dynamodb", endpoint_url=endpoint, config=config),
    )


def create_table(dynamodb: Any, table: str) -> None:
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=TABLE_ATTRIBUTES,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _item(task_id: str, run: str) -> dict[str, Any]:
    return {
        "id": {"S": task_id},
        "status": {"S": "queued"},
        "type": {"S": "noop"},
        "payload": {"S": json.dumps({"run": run})},
    }


def _body(task_id: str, run: str) -> str:
    return json.dumps({"id": task_id, "type": "noop", "run": run}, separators=(",", ":"))


def submit(sqs: Any, dynamodb: Any, queue_url: str, table: str, task_id: str, run: str) -> None:
    dynamodb.put_item(
        TableName=table, Item=_item(task_id, run), ConditionExpression="attribute_not_exists(id)"
    )
    sqs.send_message(QueueUrl=queue_url, MessageBody=_body(task_id, run))


def submit_batch(sqs: Any, dynamodb: Any, queue_url: str, table: str, ids: list[str], run: str) -> None:
    for start in range(0, len(ids), 25):
        pending: dict[str, Any] = {
            table: [{"PutRequest": {"Item": _item(i, run)}} for i in ids[start : start + 25]]
        }
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    for start in range(0, len(ids), 10):
        chunk = ids[start : start + 10]
        out = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(n), "MessageBody": _body(i, run)} for n, i in enumerate(chunk)],
        )
        if out.get("Failed"):
            raise RuntimeError(f"SendMessageBatch failed: {out['Failed']}")


class FloorWorker:
    def __init__(self, endpoint: str, queue_url: str, table: str, concurrency: int, wait: int = 20) -> None:
        self.sqs, self.dynamodb = clients(endpoint, concurrency + 4)
        self.queue_url = queue_url
        self.table = table
        self.concurrency = concurrency
        self.wait = wait
        self.me = f"floor-{os.getpid()}"
        self.free = threading.Semaphore(concurrency)
        self.pool = ThreadPoolExecutor(concurrency)
        self.deletes: queues.Queue[str] = queues.Queue()

    def run(self) -> None:
        threading.Thread(target=self._delete_loop, daemon=True).start()
        emit("ready", os.environ.get("BENCH_READY", "-"), str(os.getpid()))
        backlog = False
        gather = min(10, -(-self.concurrency * 3 // 4))
        while True:
            self.free.acquire()
            slots = 1
            deadline = time.monotonic() + (RECEIVE_GATHER_SECONDS if backlog else 0.0)
            while slots < 10:
                if self.free.acquire(blocking=False):
                    slots += 1
                elif slots >= gather or (left := deadline - time.monotonic()) <= 0:
                    break
                elif self.free.acquire(timeout=left):
                    slots += 1
            messages = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=slots, WaitTimeSeconds=self.wait
            ).get("Messages", [])
            backlog = len(messages) == slots
            for _ in range(slots - len(messages)):
                self.free.release()
            for message in messages:
                self.pool.submit(self._process, message)

    def _process(self, message: dict[str, Any]) -> None:
        try:
            body = json.loads(message["Body"])
            claimed = self._update(body["id"], ":running", "#s = :queued", {":queued": {"S": "queued"}})
            if claimed:
                emit("start", body.get("run", "-"), body["id"])  # the handler: a no-op
                done = self._update(
                    body["id"], ":succeeded", "#s = :running AND worker = :me", {":running": {"S": "running"}}
                )
                if done:
                    emit("done", body.get("run", "-"), body["id"])
                    self.deletes.put(message["ReceiptHandle"])
        finally:
            self.free.release()

    def _update(self, task_id: str, status: str, condition: str, values: dict[str, Any]) -> bool:
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key={"id": {"S": task_id}},
                UpdateExpression=f"SET #s = {status}, worker = :me",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    **values,
                    status: {"S": status[1:]},
                    ":me": {"S": self.me},
                },
            )
            return True
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False

    def _delete_loop(self) -> None:
        while True:
            batch = [self.deletes.get()]
            deadline = time.monotonic() + DELETE_GATHER_SECONDS
            while len(batch) < 10 and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self.deletes.get(timeout=left))
                except queues.Empty:
                    break
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": h} for n, h in enumerate(batch)],
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the floor's worker")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--wait", type=int, default=20, help="long-poll seconds")
    args = parser.parse_args(argv)
    FloorWorker(args.endpoint, args.queue_url, args.table, args.concurrency, args.wait).run()


if __name__ == "__main__":
    main()
