"""What a million tasks cost on AWS, from the requests counted at the proxy.

SQS bills every request (each 64 KB of payload counts as one; every message here is far
smaller). DynamoDB on-demand bills request *units*: a write of an item up to 1 KB is one
write unit for the table, plus one for every global secondary index the write touches --
two for an index whose key attribute changes (a delete and a put), one for an index
whose projected attributes change. Transactions cost double. So the unit counts come
from the table layout, not only from the request counts:

- Conveyor's table has the three GSIs of ``conveyor.aws.dynamodb.INDEXES``; ``kind-index``
  and ``type-index`` project keys only (``KEYS_ONLY``): creating a task writes 1 + 3 units;
  a status transition moves the key of ``status-index`` and leaves the keys-only indexes
  alone: 1 + 2 units.
  Worker heartbeats (a few per run) are priced as task transitions: an upper bound.
- Celery's result table and the floor's table have no index: one unit per item written.

Reads are priced as one read unit each (strongly consistent, items under 4 KB): an
upper bound. DescribeTable and other control-plane calls are free.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.aws.dynamodb import INDEXES, KEYS_ONLY

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
# Columns whose value a Conveyor status transition changes, i.e. the GSIs whose key moves.
TRANSITION_KEYS = {"status"}


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
        def touched(index: str, key: str) -> int:
            if key in TRANSITION_KEYS:
                return 2  # the entry moves: a delete and a put
            return 0 if index in KEYS_ONLY else 1  # a projected attribute changed

        return cls(
            insert=1 + len(INDEXES),
            update=1 + sum(touched(index, key) for index, key in INDEXES.items()),
            # A task enters a status's key (a put) and leaves it (a delete): two units on the
            # busiest value ("queued", then "running").
            hot_key=2.0 if TRANSITION_KEYS & set(INDEXES.values()) else 0.0,
        )


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
