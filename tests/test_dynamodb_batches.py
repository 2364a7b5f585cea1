"""The DynamoDB store's batch calls: DynamoDB may leave part of a batch unprocessed
(throttling) and answer 200; the store re-sends that part, backing off, and gives up
with Unavailable (a 503 at the API) rather than silently dropping it."""

from __future__ import annotations

import pytest

from conveyor.aws import dynamodb
from conveyor.errors import Unavailable


def test_the_unprocessed_part_is_sent_again_with_growing_pauses(monkeypatch):
    pauses: list[float] = []
    monkeypatch.setattr(dynamodb.time, "sleep", pauses.append)
    sent: list[dict] = []
    left = [{"t": ["b", "c"]}, {"t": ["c"]}, {}]

    def call(RequestItems):
        sent.append(RequestItems)
        return {"UnprocessedItems": left[len(sent) - 1]}

    answers = dynamodb._until_processed("BatchWriteItem", call, {"t": ["a", "b", "c"]})
    assert sent == [{"t": ["a", "b", "c"]}, {"t": ["b", "c"]}, {"t": ["c"]}]
    assert len(answers) == 3 and pauses == [0.05, 0.1]


def test_a_batch_never_processed_is_unavailable_not_dropped(monkeypatch):
    monkeypatch.setattr(dynamodb.time, "sleep", lambda _: None)

    def never(RequestItems):
        return {"UnprocessedKeys": RequestItems}

    with pytest.raises(Unavailable, match="BatchGetItem"):
        dynamodb._until_processed("BatchGetItem", never, {"t": 1})
