"""One trace from the client's request through a real API process, SQS (the moto server) and
a real worker process, as an OTLP collector receives it."""

from __future__ import annotations

import json
import signal

import httpx

from conveyor.model import Status
from tests.conftest import AUTH_HEADERS, TEST_TOKEN, wait_for
from tests.faults.harness import Api, spawn_worker
from tests.observability.otlp import Receiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SERVER, CLIENT, CONSUMER = 2, 3, 5  # OTLP span kinds


def test_a_task_is_one_trace_from_the_request_to_the_attempt(runtime, settings, tmp_path):
    receiver = Receiver().start()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "CONVEYOR_LOG_FORMAT": "json",
    }
    api = Api(settings, log=tmp_path / "api.log", **env)
    worker = spawn_worker(settings, log=tmp_path / "worker.log", **env)
    try:
        with httpx.Client(base_url=api.url, headers=AUTH_HEADERS, timeout=30) as http:
            traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
            answer = http.post(
                "/v1/tasks", json={"type": "echo", "payload": {"n": 1}}, headers={"traceparent": traceparent}
            )
            assert answer.status_code == 202, answer.text
            task_id = answer.json()["id"]
            assert http.get("/healthz").status_code == 200  # excluded from traces
        wait_for(lambda: runtime.engine.get(task_id).status is Status.SUCCEEDED, timeout=30)
        # The attempt span ends just after the record is written; wait for it to arrive.
        wait_for(lambda: any(s.name == "run echo" for s in receiver.spans), timeout=15)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
        api.stop()
        receiver.stop()

    spans = receiver.spans
    by_id = {s.span_id: s for s in spans}
    [request] = [s for s in spans if s.kind == SERVER and s.attributes.get("conveyor.task_id") == task_id]
    [attempt] = [s for s in spans if s.name == "run echo"]
    # The client's trace goes on in the API, and the worker's attempt is the request's child.
    assert request.service == "conveyor-api" and request.trace_id == TRACE_ID
    assert request.parent_id == CLIENT_SPAN
    assert attempt.service == "conveyor-worker" and attempt.kind == CONSUMER
    assert attempt.trace_id == TRACE_ID and attempt.parent_id == request.span_id
    assert attempt.attributes["conveyor.task.id"] == task_id
    assert attempt.attributes["conveyor.task.type"] == "echo"
    assert attempt.attributes["conveyor.task.attempt"] == 1
    assert attempt.attributes["conveyor.task.outcome"] == "succeeded"

    def ancestors(span):
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            yield span

    # AWS calls, instrumented: the API's record write and send, and the worker's claim and
    # finish, are in the same trace, under the request and the attempt.
    aws = [s for s in spans if s.kind == CLIENT and s.attributes.get("rpc.system") == "aws-api"]
    api_calls = {s.name for s in aws if request in ancestors(s)}
    worker_calls = {s.name for s in aws if attempt in ancestors(s)}
    assert {"DynamoDB.PutItem", "SQS.SendMessage"} <= api_calls, api_calls
    assert "DynamoDB.UpdateItem" in worker_calls, worker_calls
    # Background calls (long polls, heartbeats, readiness) and probes make no traces.
    assert not [s for s in aws if not s.parent_id], [s.name for s in aws if not s.parent_id]
    assert not [s for s in spans if "healthz" in s.name]
    # CONVEYOR_LOG_FORMAT=json: every line either process wrote is one JSON object.
    for name in ("api.log", "worker.log"):
        written = (tmp_path / name).read_text().splitlines()
        assert written, name
        assert all(isinstance(json.loads(line), dict) for line in written), name
        assert TEST_TOKEN not in "\n".join(written), name
