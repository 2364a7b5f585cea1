"""/v1/schedules over the real app and the moto-backed store, with schedules loaded from
TaskSchedule YAML beside the example TaskTypes (as `make run` loads them)."""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from api.app import create_app
from conveyor import tokens
from conveyor.bootstrap import build
from conveyor.model import from_rfc3339
from conveyor.settings import Settings
from tests.conftest import AUTH_HEADERS, EXAMPLES, wait_for

SCHEDULES = """\
apiVersion: conveyor.dev/v1alpha1
kind: TaskSchedule
metadata: {name: every-minute}
spec: {taskType: echo, schedule: "* * * * *", payload: {hello: schedules}}
---
apiVersion: conveyor.dev/v1alpha1
kind: TaskSchedule
metadata: {name: nightly}
spec: {taskType: echo, schedule: "@daily", timeZone: America/New_York, suspend: true}
---
apiVersion: conveyor.dev/v1alpha1
kind: TaskSchedule
metadata: {name: bad-cron}
spec: {taskType: echo, schedule: "61 * * * *"}
---
apiVersion: conveyor.dev/v1alpha1
kind: TaskSchedule
metadata: {name: bad-zone}
spec: {taskType: echo, schedule: "* * * * *", timeZone: Mars/Olympus}
---
apiVersion: conveyor.dev/v1alpha1
kind: TaskSchedule
metadata: {name: no-type}
spec: {taskType: no-such-type, schedule: "* * * * *"}
"""

VIEW_KEYS = {
    "name", "namespace", "task_type", "schedule", "time_zone", "suspended",
    "next_run_at", "last_run_at", "last_task_id", "ready", "reason",
}  # fmt: skip


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    for name in ("echo.yaml", "fail.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    (tmp_path / "schedules.yaml").write_text(SCHEDULES)
    return tmp_path


@pytest.fixture
def client(settings_factory: Callable[..., Settings], registry_dir: Path) -> Iterator[TestClient]:
    runtime = build(settings_factory(tasktypes=str(registry_dir)))
    app = create_app(runtime.engine, CollectorRegistry())
    with TestClient(app, raise_server_exceptions=False, headers=AUTH_HEADERS) as c:
        yield c


def test_list_shows_every_schedule_with_readiness(client: TestClient) -> None:
    response = client.get("/v1/schedules")
    assert response.status_code == 200
    items = {i["name"]: i for i in response.json()["items"]}
    assert set(items) == {"every-minute", "nightly", "bad-cron", "bad-zone", "no-type"}
    assert all(set(i) == VIEW_KEYS for i in items.values())
    ok = items["every-minute"]
    assert ok["ready"] and ok["namespace"] == "default" and ok["time_zone"] == "UTC"
    assert from_rfc3339(ok["next_run_at"]).second == 0 and ok["last_task_id"] is None
    assert items["nightly"]["suspended"] and items["nightly"]["next_run_at"] is None
    assert not items["bad-cron"]["ready"] and "Bad minute" in items["bad-cron"]["reason"]
    assert not items["bad-zone"]["ready"] and "Mars/Olympus" in items["bad-zone"]["reason"]
    assert not items["no-type"]["ready"] and "no-such-type" in items["no-type"]["reason"]


def test_get_gives_the_next_five_runs_and_404_names_the_field(client: TestClient) -> None:
    one = client.get("/v1/schedules/every-minute").json()
    runs = [from_rfc3339(t) for t in one["next_runs"]]
    assert len(runs) == 5 and all(b - a == (runs[1] - runs[0]) for a, b in itertools.pairwise(runs))
    assert (runs[1] - runs[0]).total_seconds() == 60 and one["next_runs"][0] == one["next_run_at"]
    assert all(t.endswith("Z") for t in one["next_runs"])
    missing = client.get("/v1/schedules/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["errors"][0]["pointer"] == "/path/name"
    assert client.get("/v1/schedules/" + "x" * 300).status_code == 404


def test_trigger_runs_one_now(client: TestClient) -> None:
    response = client.post("/v1/schedules/every-minute/trigger")
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["type"] == "echo" and task["payload"] == {"hello": "schedules"} and task["status"] == "queued"
    assert response.headers["location"] == f"/v1/tasks/{task['id']}"
    assert client.get(f"/v1/tasks/{task['id']}").status_code == 200
    view = client.get("/v1/schedules/every-minute").json()
    assert view["last_task_id"] == task["id"] and view["last_run_at"] is not None
    # With an Idempotency-Key, a repeat is the same task.
    first = client.post("/v1/schedules/every-minute/trigger", headers={"Idempotency-Key": "k"})
    again = client.post("/v1/schedules/every-minute/trigger", headers={"Idempotency-Key": "k"})
    assert (first.status_code, again.status_code) == (202, 200) and first.json()["id"] == again.json()["id"]
    # The schedule's state item is not a task.
    assert all(t["type"] == "echo" for t in client.get("/v1/tasks").json()["items"])
    assert client.get("/v1/stats").json()["total_tasks"] == 2


@pytest.mark.parametrize("name", ["bad-cron", "bad-zone", "no-type"])
def test_trigger_of_a_schedule_not_ready_is_409_with_why(client: TestClient, name: str) -> None:
    response = client.post(f"/v1/schedules/{name}/trigger")
    assert response.status_code == 409
    body = response.json()
    assert body["type"].endswith("not-ready") and "not ready" in body["detail"]
    assert body["errors"][0]["pointer"] == "/path/name"


def test_trigger_of_an_unknown_schedule_is_404(client: TestClient) -> None:
    assert client.post("/v1/schedules/nope/trigger").status_code == 404


def test_a_submit_only_token_triggers_but_does_not_see_the_payload(
    settings_factory: Callable[..., Settings], registry_dir: Path, tmp_path: Path
) -> None:
    secret = tokens.generate_token()
    entry = tokens.TokenEntry("cron-bot", tokens.hash_token(secret), frozenset({tokens.SUBMIT}))
    tokens.write_tokens_file(tmp_path / "tokens.json", tokens.TokenSet([entry]))
    settings = settings_factory(tasktypes=str(registry_dir), auth_tokens_file=str(tmp_path / "tokens.json"))
    app = create_app(build(settings).engine, CollectorRegistry())
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as c:
        response = c.post("/v1/schedules/every-minute/trigger")
        assert response.status_code == 202
        assert "payload" not in response.json() and response.json()["redacted"] == ["payload", "result"]
        assert c.get("/v1/schedules").status_code == 403


@pytest.mark.parametrize("enabled", [True, False])
def test_the_api_lifespan_runs_the_firing_loop_when_enabled(
    settings_factory: Callable[..., Settings], registry_dir: Path, enabled: bool
) -> None:
    settings = settings_factory(
        tasktypes=str(registry_dir), scheduler_enabled=enabled, scheduler_interval_seconds=0.05
    )
    app = create_app(build(settings).engine, CollectorRegistry())
    firing = app.state.scheduler
    with TestClient(app, headers=AUTH_HEADERS):
        if enabled:
            wait_for(lambda: firing.ticks >= 3, timeout=10)
            # Its first look recorded where each ready schedule starts from.
            assert firing.engine.store.schedule_state("default/every-minute").last_slot is not None
        else:
            time.sleep(0.3)
            assert firing.ticks == 0
    ticks = firing.ticks
    time.sleep(0.2)
    assert firing.ticks == ticks  # stopped with the app


def test_in_a_cluster_the_firing_loop_writes_taskschedule_status(
    settings_factory: Callable[..., Settings], registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API wires conveyor.kube's writer as the firing loop's status sink when it runs
    in a pod with a token; elsewhere there is none."""
    from conveyor import kube

    settings = settings_factory(tasktypes=str(registry_dir), scheduler_enabled=False)
    engine = build(settings).engine
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert create_app(engine, CollectorRegistry()).state.scheduler.status_sink is None
    account = registry_dir.parent / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("t")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    original = kube.KubeStatusWriter.from_environment.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        kube.KubeStatusWriter,
        "from_environment",
        classmethod(lambda cls, environ=None, account=account: original(cls, environ, account)),
    )
    sink = create_app(engine, CollectorRegistry()).state.scheduler.status_sink
    assert sink is not None and sink.__self__.__class__ is kube.KubeStatusWriter
