"""What a million tasks cost on AWS, from the requests counted at the proxy.

SQS bills every request (each 64 KB of payload counts as one; every message here is far
smaller). DynamoDB on-demand bills request *units*: a write of an item up to 1 KB is one
write unit for the table, plus one for every global secondary index the write touches --
two for an index whose key attribute changes (a delete and a put), one for an index
whose projected attributes change. Transactions cost double. So the unit counts come
from the table layout, not only from the request counts:

- Conveyor's units are measured, not modelled: ``Layout.conveyor()`` runs a small task's
  create, claim and finish through the real store on a table made by ``conveyor init``'s
  code (in-process moto) and prices each write from the item before and after it by
  DynamoDB's rules (``conveyor.aws.units``). With today's layout that is 1 + 2 units to
  create (the table, ``status-index``, the keys-only ``type-index``) and 1 + 2 per status
  change (``status-index``'s entry moves).
  Worker heartbeats (a few per run) are priced as task transitions: an upper bound.
- Celery's result table and the floor's table have no index: one unit per item written.

Reads are priced as one read unit each (strongly consistent, items under 4 KB): an
upper bound. DescribeTable and other control-plane calls are free.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

from conveyor.aws.dynamodb import TASK_INDEXES

PRICES_AS_OF = "2026-11"  # us-east-1 list prices
SQS_PER_MILLION_REQUESTS = 0.40  # standard queue, beyond the free tier
DYNAMODB_PER_MILLION_WRU = 0.625  # on-demand, since the 2024-11-01 price cut
DYNAMODB_PER_MILLION_RRU = 0.125
PRICE_NOTE = (
    "Public us-east-1 list prices as of November 2026: SQS standard queue "
    "$0.40 per million requests (after the 1 M/month free tier); DynamoDB on-demand "
    "$0.625 per million write request units and $0.125 per million read request units "
    "(the prices since AWS's 1 November 2024 on-demand cut). Check aws.amazon.com/sqs/pricing "
    "and aws.amazon.com/dynamodb/pricing/on-demand before quoting them."
)

READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}


@dataclass(frozen=True)
class Layout:
    """Write units per item written, by kind of write; ``hot_key``: write units per task that
    land on one partition-key value shared by every task (an index keyed by status), the
    writes one partition must absorb whatever the table's size."""

    insert: float
    update: float
    hot_key: float = 0.0

    @classmethod
    def conveyor(cls) -> Layout:
        """Measured: a small task's create, claim and finish through the real store on a
        table made by ``conveyor init``'s code, each write priced from its item before
        and after (``conveyor.aws.units``)."""
        steps = measured_lifecycle()
        return cls(
            insert=float(sum(steps["create"].values())),
            update=(sum(steps["claim"].values()) + sum(steps["finish"].values())) / 2,
            # A task enters a status's key (a put) and leaves it (a delete): two units on the
            # busiest value ("queued", then "running").
            hot_key=2.0 if "status" in TASK_INDEXES.values() else 0.0,
        )


@functools.cache
def measured_lifecycle() -> dict[str, Counter[str]]:
    """The units of one task's writes, on an in-process moto DynamoDB (its own endpoint, so
    no other client of this process is touched)."""
    import boto3
    from moto import mock_aws

    from conveyor.aws.provision import ensure_table
    from conveyor.aws.units import task_lifecycle

    with mock_aws():
        client = boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url="https://dynamodb.us-east-1.amazonaws.com",
            aws_access_key_id="measure",
            aws_secret_access_key="measure",
        )
        ensure_table(client, "conveyor-cost-model")
        return task_lifecycle(client, "conveyor-cost-model")


PLAIN = Layout(insert=1, update=1)


def layout_of(system: str) -> Layout:
    return Layout.conveyor() if system.startswith("conveyor") else PLAIN


@dataclass(frozen=True)
class Cost:
    sqs_requests: float  # per task
    dynamodb_requests: float
    wru: float
    rru: float

    @property
    def requests(self) -> float:
        return self.sqs_requests + self.dynamodb_requests

    @property
    def sqs_usd(self) -> float:
        """Per million tasks."""
        return self.sqs_requests * SQS_PER_MILLION_REQUESTS

    @property
    def dynamodb_usd(self) -> float:
        return self.wru * DYNAMODB_PER_MILLION_WRU + self.rru * DYNAMODB_PER_MILLION_RRU

    @property
    def usd(self) -> float:
        return self.sqs_usd + self.dynamodb_usd


def cost_per_task(system: str, requests: dict[str, int], items: dict[str, int], n: int) -> Cost:
    layout = layout_of(system)
    sqs = dyn = wru = rru = 0.0
    for key, count in requests.items():
        service, _, action = key.partition(".")
        if service == "sqs":
            sqs += count
        elif service == "dynamodb":
            dyn += count
            written = items.get(key, count)
            if action in ("PutItem", "BatchWriteItem", "DeleteItem"):
                wru += written * layout.insert
            elif action == "UpdateItem":
                wru += written * layout.update
            elif action == "TransactWriteItems":
                wru += 2 * written * layout.insert
            elif action in READS:
                rru += count
    return Cost(sqs / n, dyn / n, wru / n, rru / n)
