"""The `conveyor` CLI and the Python client against a real uvicorn server."""

from __future__ import annotations

import json
import threading
import time

import pytest
import uvicorn
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from conveyor.cli import main
from conveyor.client import Client, ConveyorHTTPError
from conveyor.local import free_port


@pytest.fixture
def live_url(runtime, start_worker, monkeypatch):
    from api.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(runtime.engine, CollectorRegistry()), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    start_worker()
    monkeypatch.delenv("CONVEYOR_TOKEN", raising=False)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_submit_wait_get_list(live_url):
    out = run("submit", "text-transform", '{"text": "a b c"}', "--wait", "--url", live_url)
    assert out.exit_code == 0, out.output
    task = json.loads(out.stdout)
    assert task["status"] == "succeeded" and task["result"]["word_count"] == 3
    got = run("get", task["id"], "--url", live_url)
    assert json.loads(got.stdout)["id"] == task["id"]
    listing = run("list", "--status", "succeeded", "--url", live_url)
    assert task["id"] in listing.stdout and "text-transform" in listing.stdout


def test_failures_exit_nonzero_with_the_problem(live_url):
    out = run("submit", "text-transform", '{"text": 5}', "--url", live_url)
    assert out.exit_code == 1
    assert "/payload/text" in out.output
    failed = run("submit", "fail", '{"permanent": true}', "--wait", "--url", live_url)
    assert failed.exit_code == 2 and json.loads(failed.stdout)["status"] == "failed"
    bad = run("submit", "echo", "{not json", "--url", live_url)
    assert bad.exit_code == 2 and "not JSON" in bad.output


def test_an_unreachable_api_is_a_clear_error_not_a_traceback(unused_tcp_port):
    out = run("get", "01M8V8W0QX0T40T1H5SBJA0T14", "--url", f"http://127.0.0.1:{unused_tcp_port}")
    assert out.exit_code == 1
    assert f"cannot reach the API at http://127.0.0.1:{unused_tcp_port}" in out.output
    assert "Traceback" not in out.output


def test_cancel_retry_stats(live_url):
    task = json.loads(run("submit", "echo", "{}", "--delay", "600", "--url", live_url).stdout)
    assert json.loads(run("cancel", task["id"], "--url", live_url).stdout)["status"] == "cancelled"
    assert json.loads(run("retry", task["id"], "--url", live_url).stdout)["status"] == "queued"
    stats = json.loads(run("stats", "--url", live_url).stdout)
    assert stats["total_tasks"] == 1 and set(stats["queue"]) == {"visible", "in_flight", "delayed"}


def test_client(live_url):
    with Client(live_url) as c:
        task = c.submit("echo", {"k": 1}, idempotency_key="k1")
        assert c.submit("echo", {"k": 1}, idempotency_key="k1")["id"] == task["id"]
        assert c.wait(task["id"], timeout=20)["result"] == {"k": 1}
        assert [t["id"] for t in c.iter(task_type="echo")] == [task["id"]]
        assert {t["name"] for t in c.task_types()} >= {"echo", "text-transform"}
        with pytest.raises(ConveyorHTTPError) as err:
            c.get("01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert err.value.status == 404
