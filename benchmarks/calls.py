"""What moto charges, in CPU, for each kind of call the systems make.

moto is the shared bottleneck of every local run, so its price per call explains the
throughput figures: Conveyor's claim and finish are richer UpdateItems (more attributes
set, longer conditions) than the floor's, and moto's expression engine costs grow with
them -- a cost of the local stack, not of DynamoDB, which bills by item size.
Calls go straight to moto (no proxy), one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks import floor
from benchmarks.stack import Stack, unique


def measure(stack: Stack, count: int = 50) -> dict[str, dict[str, float]]:
    from conveyor.aws import AwsBackend
    from conveyor.aws.dynamodb import TASK_INDEXES
    from conveyor.aws.provision import provision
    from conveyor.model import Status, Task, new_id, now
    from conveyor.settings import Settings

    name = unique("calls")
    settings = Settings.from_env(queue=name, dlq=name + "-dlq", table=name, bucket=name)
    backend = AwsBackend(settings)
    queue_url = provision(backend, bucket=False)["queue"]
    store = backend.store()
    sqs, dynamodb = stack.direct("sqs"), stack.direct("dynamodb")
    floor.create_table(dynamodb, name + "-floor")
    out: dict[str, dict[str, float]] = {}

    def timed(label: str, fn: Callable[[int], Any]) -> None:
        cpu, wall = stack.moto_cpu(), time.perf_counter()
        for i in range(count):
            fn(i)
        out[label] = {
            "cpu_ms": (stack.moto_cpu() - cpu) / count * 1000,
            "wall_ms": (time.perf_counter() - wall) / count * 1000,
        }

    tasks = [
        Task(
            id=new_id(),
            type="bench-noop",
            payload={"run": "calls"},
            max_attempts=3,
            created_at=now(),
            updated_at=now(),
        )
        for _ in range(count)
    ]
    claimed: list[Any] = [None] * count

    def claim(i: int) -> None:
        claimed[i] = store.claim(tasks[i].id, "bench-noop", "calls", now()).task

    timed(f"Conveyor PutItem (create, {len(TASK_INDEXES)} GSIs)", lambda i: store.create(tasks[i]))
    timed("Conveyor UpdateItem (claim)", claim)
    timed("Conveyor UpdateItem (finish)", lambda i: store.finish(claimed[i], Status.SUCCEEDED, now(), None))

    worker = floor.FloorWorker.__new__(floor.FloorWorker)
    worker.dynamodb, worker.table, worker.me = dynamodb, name + "-floor", "calls"
    ids = [f"{name}-{i}" for i in range(count)]
    timed(
        "floor PutItem",
        lambda i: dynamodb.put_item(
            TableName=worker.table,
            Item=floor._item(ids[i], "calls"),
            ConditionExpression="attribute_not_exists(id)",
        ),
    )
    timed(
        "floor UpdateItem (claim)",
        lambda i: worker._update(ids[i], ":running", "#s = :queued", {":queued": {"S": "queued"}}),
    )
    timed(
        "floor UpdateItem (finish)",
        lambda i: worker._update(
            ids[i], ":succeeded", "#s = :running AND worker = :me", {":running": {"S": "running"}}
        ),
    )
    timed(
        "SQS SendMessage", lambda i: sqs.send_message(QueueUrl=queue_url, MessageBody='{"id":"x","type":"y"}')
    )
    receipts: list[str] = []

    def receive(i: int) -> None:
        receipts.extend(
            m["ReceiptHandle"] for m in sqs.receive_message(QueueUrl=queue_url).get("Messages", [])
        )

    timed("SQS ReceiveMessage (1 of a shallow queue)", receive)
    timed(
        "SQS DeleteMessage",
        lambda i: (
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=receipts[i]) if i < len(receipts) else None
        ),
    )
    return out
