"""The benchmark harness works end to end (speeds are not asserted: that is `make bench`).

One smoke run of ``python -m benchmarks --quick`` on tiny N with Conveyor and the floor
(Celery is left to ``make bench-quick``: its worker alone takes seconds to start), in a
subprocess so its environment never leaks into the other tests; then checks of the report
and of the pieces whose arithmetic the report rests on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import live
from benchmarks.costs import Layout, cost_per_task
from benchmarks.flow import TYPES as FLOW_TYPES
from benchmarks.live import STREAMS, LiveRun
from benchmarks.proxy import classify, entries, tag
from benchmarks.report import SECTIONS, Results, _live_section, check_sections
from benchmarks.stats import Spread, percentile
from conveyor.aws.dynamodb import TASK_INDEXES
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    # The harness's own tools come with the `bench` extra, which `make test` installs: a
    # missing one fails here rather than skipping the only check that the harness runs.
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONVEYOR_"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--n=3",
            "--systems=conveyor,conveyor-2w,floor",
            "--latency-count=3",
            "--submit-count=4",
            "--clients=2",
            "--live-clients=1,3",
            # The flow-limits section has its own smoke run (below).
            "--only=throughput,latency,submit,calls,live",
            f"--results-dir={out}",
            f"--out={out / 'BENCHMARKS.md'}",
        ],
        cwd=ROOT,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "latest-quick.json").read_text())


@pytest.mark.timeout(120)
def test_the_report_has_every_section_and_its_chart(smoke):
    out, _ = smoke
    report = (out / "BENCHMARKS.md").read_text()
    assert check_sections(report) == []
    assert "Smoke run" in report
    png = out / "benchmarks-quick.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "(benchmarks-quick.png)" in report
    # Every system's records matched what was submitted (a failed check is a note, not a stop).
    assert "Check failed" not in report
    # The sizing model ran on this run's figures; the two-worker runs have their section.
    assert "| 10,000 | 30 |" in report
    assert "| +0 ms | Conveyor, 2 workers |" in report
    # Every throughput line carries its ratios; Celery was not run, so those say n/a.
    line = next(row for row in report.splitlines() if row.startswith("| Conveyor |"))
    assert "x of floor (boto3)" in line and "n/a" in line


@pytest.mark.timeout(120)
def test_every_measurement_was_taken_and_counted_at_the_proxy(smoke):
    _, data = smoke
    runs = {(r["system"], r["latency_ms"]) for r in data["throughput"]}
    assert runs == {(s, lat) for s in ("conveyor", "conveyor-2w", "floor") for lat in (0, 15)}
    for run in data["throughput"]:
        assert run["n"] == 3 and run["seconds"] > 0
        # Each task was claimed and finished with a conditional UpdateItem, seen by the proxy.
        assert run["requests"]["dynamodb.UpdateItem"] >= 2 * run["n"]
        assert run["items"]["sqs.ReceiveMessage.messages"] >= run["n"]
        assert run["rss_mb"] > 10
    conveyor = [r for r in data["throughput"] if r["system"].startswith("conveyor")]
    assert all(r["requests"]["dynamodb.PutItem"] >= r["n"] for r in conveyor)
    # The API's and every worker process's CPU were read: both of conveyor-2w's.
    assert all("api" in r["cpu"] and "worker" in r["cpu"] for r in conveyor)
    assert all("worker-2" in r["cpu"] for r in conveyor if r["system"] == "conveyor-2w")
    # 15 ms added to every AWS call: a task needs several sequential calls.
    slow = [r for r in data["throughput"] if r["latency_ms"] == 15]
    assert all(r["seconds"] > 0.015 * 4 for r in slow)
    assert {r["system"] for r in data["latency"]} == {"conveyor", "floor"}
    assert all(len(r["samples"]) == 3 and min(r["samples"]) > 0 for r in data["latency"])
    assert {(r["system"], r["clients"]) for r in data["submit"]} == {
        (s, c) for s in ("conveyor", "floor") for c in (2,)
    }
    assert all("client" in r["cpu"] for r in data["submit"])
    assert all("api" in r["cpu"] for r in data["submit"] if r["system"] == "conveyor")
    assert "Conveyor UpdateItem (claim)" in data["calls"]
    # Every client of both live streams saw every timed change (2 in a smoke run), after it
    # was written, and each stream's API process read the store while they were connected.
    assert {(r["stream"], r["clients"]) for r in data["live"]} == {
        (s, c) for s in ("task", "events") for c in (1, 3)
    }
    for run in data["live"]:
        assert len(run["samples"]) == 2 * run["clients"] and min(run["samples"]) >= 0
        assert run["reads"] > 0 and run["seconds"] > 0


@pytest.mark.timeout(120)
def test_the_flow_section_counts_what_each_limit_costs(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONVEYOR_"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only=flow",
            "--flow-tasks=4",
            f"--results-dir={tmp_path}",
            f"--out={tmp_path / 'BENCHMARKS.md'}",
        ],
        cwd=ROOT,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert check_sections(report) == []
    assert "| `bench-concurrency` | `concurrency: {max: 2}` | 4 |" in report
    flows = {r["type"]: r for r in json.loads((tmp_path / "latest-quick.json").read_text())["flow"]}
    assert set(flows) == set(FLOW_TYPES)
    free = flows["bench-free"]["by_operation"]
    # A type without limits pays nothing for them: no read before the claim, no slot or
    # rate item written, only the claim and the finish (and the heartbeat's own write).
    assert "dynamodb:GetItem" not in free and "dynamodb:PutItem" not in free
    assert 2 <= free["dynamodb:UpdateItem"] < 3
    for limited in ("bench-roomy", "bench-concurrency", "bench-rate"):
        ops = flows[limited]["by_operation"]
        assert ops["dynamodb:GetItem"] >= 1  # the task read before taking a slot or turn
        assert flows[limited]["requests_per_task"] > flows["bench-free"]["requests_per_task"]
    # Tasks over a 2-slot limit wait: they are re-sent.
    assert flows["bench-concurrency"]["by_operation"]["sqs:SendMessage"] > 0


def test_the_live_section_holds_each_streams_reads_against_one_client():
    def run(stream: str, clients: int, reads: int) -> LiveRun:
        return LiveRun(stream, clients, seconds=4.0, reads=reads, samples=[0.1, 0.3] * clients)

    runs = [run(s, c, 8 * c if s == "events" else 8) for s in STREAMS for c in (1, 50)]
    lines = _live_section(Results(meta={"live_changes": 2, "live_runs": 1}, live=runs))
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in lines if "| `GET" in line}
    assert "| 100 | 300 | 100 | 2.00 | 1.00x |" in rows[("`GET /v1/tasks/{id}/events`", "50")]
    assert "| 2.00 | 1.00x |" in rows[("`GET /v1/events`", "1")]
    assert "| 100.00 | 50.00x |" in rows[("`GET /v1/events`", "50")]  # reads that grew would show
    assert "connects 1 then 50 clients" in lines[0]
    assert _live_section(Results(meta={})) == ["Not run (`--only` left it out)."]


def test_the_feed_client_takes_only_its_tasks_progress():
    # The feed streams every task: an earlier task's last progress must not count as this one's.
    mine = {"id": "A", "status": "running", "progress": {"fraction": 0.5}}
    assert live._fraction("events", "A", mine) == 0.5
    assert live._fraction("events", "B", mine) is None
    assert live._fraction("events", "A", {"id": "A", "progress": None}) is None
    assert live._fraction("task", "A", {"status": "running", "fraction": 0.25}) == 0.25


def test_the_proxy_names_the_action_of_each_protocol():
    assert classify({"X-Amz-Target": "AmazonSQS.SendMessage"}, b"{}") == ("sqs", "SendMessage")
    assert classify({"X-Amz-Target": "DynamoDB_20120810.UpdateItem"}, b"{}") == ("dynamodb", "UpdateItem")
    auth = "AWS4-HMAC-SHA256 Credential=k/20261122/us-east-1/sqs/aws4_request, SignedHeaders=host"
    assert classify({"Authorization": auth}, b"Action=DeleteMessage&Version=2012-11-05") == (
        "sqs",
        "DeleteMessage",
    )
    assert entries("SendMessageBatch", json.dumps({"Entries": [{}, {}, {}]}).encode()) == 3
    body = {"RequestItems": {"a": [{}] * 25, "b": [{}] * 2}}
    assert entries("BatchWriteItem", json.dumps(body).encode()) == 27
    assert entries("PutItem", b"{}") == 1


def test_requests_are_attributed_to_the_system_whose_queue_or_table_they_name():
    url = "http%3A%2F%2F127.0.0.1%3A5000%2F123456789012%2Fcelery-41-3"
    assert tag(f"Action=DeleteMessage&QueueUrl={url}".encode()) == "celery-41-3"
    assert tag(b'{"TableName": "celery-results-41-4", "Key": {}}') == "celery-results-41-4"
    assert tag(b'{"QueueUrl": "http://x/123/cv-41-0-dlq"}') == "cv-41-0"  # the DLQ is its system's
    assert tag(b'{"RequestItems": {"floor-41-7": []}}') == "floor-41-7"
    assert tag(b'{"QueueNamePrefix": ""}') == ""


def test_write_units_follow_the_table_layout():
    layout = Layout.conveyor()
    # Measured from the store's real writes: the table and each task index once at create.
    assert layout.insert == 1 + len(TASK_INDEXES) == 3
    assert layout.update == 1 + 2 == 3  # status-index moves; the keys-only index is untouched
    cost = cost_per_task(
        "conveyor",
        {"dynamodb.PutItem": 10, "dynamodb.UpdateItem": 20, "sqs.SendMessage": 10, "dynamodb.GetItem": 5},
        {"dynamodb.PutItem": 10, "dynamodb.UpdateItem": 20, "sqs.SendMessage": 10, "dynamodb.GetItem": 5},
        10,
    )
    assert cost.wru == layout.insert + 2 * layout.update and cost.rru == 0.5
    assert cost.sqs_requests == 1 and cost.requests == 4.5
    floor = cost_per_task("floor", {"dynamodb.BatchWriteItem": 1}, {"dynamodb.BatchWriteItem": 25}, 25)
    assert floor.wru == 1 and floor.dynamodb_requests == 1 / 25


def test_percentiles_are_observed_values_and_spreads_report_the_median():
    values = [float(v) for v in range(1, 201)]
    assert percentile(values, 50) == 100 and percentile(values, 99) == 198
    spread = Spread.of([3.0, 1.0, 2.0])
    assert (spread.median, spread.low, spread.high) == (2.0, 1.0, 3.0)
    assert spread.fmt(1) == "2.0 (1.0-3.0)"
    assert len(SECTIONS) == 12


def test_the_floor_batches_by_the_workers_rules():
    # Copied, not imported: the floor stays plain boto3 (its RSS is measured).
    from benchmarks import floor
    from worker import deletes, runtime

    assert floor.RECEIVE_GATHER_SECONDS == runtime.RECEIVE_GATHER_SECONDS
    assert floor.DELETE_GATHER_SECONDS == deletes.GATHER_SECONDS
