"""Stats and metrics per priority level, through the API on SQS (the moto server): each
level's queue is its own, and the totals keep summing them."""

from __future__ import annotations

import jsonschema

from api.schemas import STATS


def test_stats_and_metrics_give_each_levels_queue(api):
    for priority, n in (("high", 2), ("low", 1)):
        for _ in range(n):
            r = api.post("/v1/tasks", json={"type": "echo", "payload": {}, "priority": priority})
            assert r.status_code == 202, r.text
    assert api.post("/v1/tasks", json={"type": "echo", "payload": {}}).status_code == 202
    stats = api.get("/v1/stats").json()
    jsonschema.validate(stats, STATS)
    visible = {level: depth["visible"] for level, depth in stats["queues"].items()}
    assert visible == {"high": 2, "normal": 1, "low": 1}
    assert stats["queue"]["visible"] == 4 and stats["queue_depth"] == 4
    text = api.get("/metrics").text
    assert 'conveyor_queue_messages{queue="main",state="visible"} 4.0' in text
    for level, n in visible.items():
        assert f'conveyor_queue_priority_messages{{priority="{level}",state="visible"}} {n}.0' in text
