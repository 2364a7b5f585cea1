"""The `conveyor` CLI and the Python client against a real uvicorn server."""

from __future__ import annotations

import json

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from conveyor.bootstrap import build
from conveyor.cli import main
from conveyor.client import Client, ConveyorHTTPError
from tests.console.conftest import schedules_registry
from tests.support.servers import ServerThread


def _serve(runtime, start_worker, monkeypatch):
    from api.app import create_app

    server = ServerThread(create_app(runtime.engine, CollectorRegistry())).start()
    start_worker(runtime)
    monkeypatch.delenv("CONVEYOR_TOKEN", raising=False)
    yield server.url
    server.stop()


@pytest.fixture
def live_url(runtime, start_worker, monkeypatch):
    yield from _serve(runtime, start_worker, monkeypatch)


@pytest.fixture
def schedules_url(settings_factory, start_worker, monkeypatch, tmp_path):
    """A live API whose registry holds the console tests' TaskSchedules."""
    settings = settings_factory(tasktypes=str(schedules_registry(tmp_path / "registry")))
    yield from _serve(build(settings), start_worker, monkeypatch)


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


def test_schedules_list_get_and_trigger(schedules_url):
    with Client(schedules_url) as c:
        api = c.schedules()
    names = [s["name"] for s in api]
    assert {"nightly-report", "paused-cleanup", "broken-cron"} <= set(names)

    # --json is the API's list as it is; the table has one line per schedule, in order.
    listed = run("schedules", "--json", "--url", schedules_url)
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == {"items": api}
    table = run("schedules", "--url", schedules_url)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:6] == ["NAME", "SCHEDULE", "TIMEZONE", "TYPE", "SUSPEND", "LAST"]
    assert [line.split()[0] for line in lines[1:]] == names
    by_name = {line.split()[0]: line for line in lines[1:]}
    nightly = next(s for s in api if s["name"] == "nightly-report")
    assert by_name["nightly-report"].split()[1:8] == [
        "0", "2", "*", "*", "*", "Europe/Paris", "echo",
    ]  # fmt: skip
    assert nightly["next_run_at"].replace("+00:00", "Z") in by_name["nightly-report"]
    broken = next(s for s in api if s["name"] == "broken-cron")
    assert "False" in by_name["broken-cron"] and broken["reason"] in by_name["broken-cron"]
    assert "REASON" in lines[0]
    # Text from the API is printed as it is, never read as table markup.
    bracket = next(s for s in api if s["name"] == "bracket-cron")
    assert "0 2 [/] [b]x *" in by_name["bracket-cron"] and bracket["reason"] in by_name["bracket-cron"]

    got = run("schedules", "get", "nightly-report", "--url", schedules_url)
    assert got.exit_code == 0, got.output
    detail = json.loads(got.stdout)
    assert detail["name"] == "nightly-report" and len(detail["next_runs"]) == 5

    # The group's --url reaches the subcommand; --wait follows the task to its end.
    ran = run("schedules", "--url", schedules_url, "trigger", "nightly-report", "--wait")
    assert ran.exit_code == 0, ran.output
    task = json.loads(ran.stdout)
    assert task["type"] == "echo" and task["status"] == "succeeded"
    assert task["result"] == {"report": "nightly"}

    # Refusals: the API's problem in words, exit 1, no traceback.
    not_ready = run("schedules", "trigger", "broken-cron", "--url", schedules_url)
    assert not_ready.exit_code == 1 and "error 409" in not_ready.output
    assert "Traceback" not in not_ready.output
    unknown = run("schedules", "trigger", "no-such-schedule", "--url", schedules_url)
    assert unknown.exit_code == 1 and "error 404" in unknown.output
    missing = run("schedules", "get", "no-such-schedule", "--url", schedules_url)
    assert missing.exit_code == 1 and "error 404" in missing.output


def test_schedules_with_an_unreachable_api_is_a_clear_error(unused_tcp_port):
    url = f"http://127.0.0.1:{unused_tcp_port}"
    for args in (["schedules"], ["schedules", "trigger", "x"], ["schedules", "--url", url, "get", "x"]):
        out = run(*args, *([] if "--url" in args else ["--url", url]))
        assert out.exit_code == 1, args
        assert f"cannot reach the API at {url}" in out.output and "Traceback" not in out.output


@pytest.mark.parametrize(
    ("call", "path"),
    [
        (lambda c, v: c.get(v), "/v1/tasks/{}"),
        (lambda c, v: c.cancel(v), "/v1/tasks/{}/cancel"),
        (lambda c, v: c.retry(v), "/v1/tasks/{}/retry"),
        (lambda c, v: c.schedule(v), "/v1/schedules/{}"),
        (lambda c, v: c.trigger_schedule(v), "/v1/schedules/{}/trigger"),
    ],
)
def test_an_id_or_name_is_one_path_segment(call, path):
    # "X/cancel?" must not turn a read into a cancel, nor reach any route but the one called.
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json={})

    with Client("http://conveyor.test", "t", transport=httpx.MockTransport(answer)) as client:
        call(client, "X/cancel?a=1#")
    assert seen == [path.format("X%2Fcancel%3Fa%3D1%23")]


@pytest.fixture
def unique_url(settings_factory, monkeypatch, tmp_path):
    """A live API (no worker) whose registry holds the unique task types."""
    from api.app import create_app
    from tests.support.unique import unique_types

    engine = build(settings_factory(tasktypes=str(unique_types(tmp_path)))).engine
    monkeypatch.delenv("CONVEYOR_TOKEN", raising=False)
    with ServerThread(create_app(engine, CollectorRegistry())) as server:
        yield server.url


def test_submit_with_priority_and_unique_key(unique_url):
    args = ("submit", "plain", "{}", "--priority", "high", "--unique-key", "nightly", "--url", unique_url)
    first = json.loads(run(*args).stdout)
    assert first["priority"] == "high" and first["unique_key"] == "nightly"
    again = run(*args)
    assert again.exit_code == 0 and json.loads(again.stdout)["id"] == first["id"]  # return-existing
    held = json.loads(run("submit", "once", '{"user": "ada"}', "--url", unique_url).stdout)
    refused = run("submit", "once", '{"user": "ada"}', "--url", unique_url)
    assert refused.exit_code == 1
    assert "error 409" in refused.output and "/unique_key" in refused.output
    assert f"existing task: {held['id']}" in refused.output
    bad = run("submit", "plain", "{}", "--priority", "urgent", "--url", unique_url)
    assert bad.exit_code == 2 and "urgent" in bad.output


def test_client_priority_unique_key_and_the_duplicate_problem(unique_url):
    with Client(unique_url) as c:
        task = c.submit("plain", {}, priority="low", unique_key="k")
        assert (task["priority"], task["unique_key"]) == ("low", "k")
        assert c.submit("plain", {"other": 1}, unique_key="k")["id"] == task["id"]
        held = c.submit("once", {"user": "ada"})
        with pytest.raises(ConveyorHTTPError) as err:
            c.submit("once", {"user": "ada"})
        assert err.value.status == 409
        assert err.value.problem["type"] == "/problems/duplicate"
        assert err.value.problem["existing_task"] == held["id"]


def test_the_cli_priority_choices_are_the_api_levels():
    from conveyor.cli import submit as command
    from conveyor.model import PRIORITIES

    option = next(p for p in command.params if p.name == "priority")
    assert list(option.type.choices) == [p.value for p in PRIORITIES]
