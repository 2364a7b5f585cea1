from __future__ import annotations

from tests.conftest import wait_for


def test_submit_runs_and_result_reads_back(api, start_worker):
    start_worker()
    r = api.post("/v1/tasks", json={"type": "text-transform", "payload": {"text": "hello cloud queue"}})
    assert r.status_code == 202, r.text
    task = r.json()
    assert r.headers["location"] == f"/v1/tasks/{task['id']}"
    assert task["status"] == "queued"
    done = wait_for(lambda: (t := api.get(f"/v1/tasks/{task['id']}").json())["status"] == "succeeded" and t)
    assert done["result"] == {"length": 17, "uppercase": "HELLO CLOUD QUEUE", "word_count": 3}
    assert done["attempts"] == 1
    assert done["started_at"] and done["finished_at"] and done["worker"]


def test_a_submit_leaves_the_event_loop_once(monkeypatch):
    """Parsing, checking, recording and sending a submit share one thread hop: each hop
    costs more CPU than parsing and checking a small body."""
    from prometheus_client import CollectorRegistry
    from starlette.concurrency import run_in_threadpool
    from starlette.testclient import TestClient

    from api import body, offload
    from api.app import create_app
    from api.routes import tasks
    from tests.conftest import AUTH_HEADERS, make_settings
    from tests.support.engines import memory_engine

    hops: list[str] = []

    async def counted(func, *args, **kwargs):
        hops.append("anyio")
        return await run_in_threadpool(func, *args, **kwargs)

    async def counted_blocking(func, *args):
        hops.append("own executor")
        return await offload.run_blocking(func, *args)

    monkeypatch.setattr(tasks, "run_in_threadpool", counted)
    monkeypatch.setattr(body, "run_in_threadpool", counted)
    monkeypatch.setattr(tasks, "run_blocking", counted_blocking)
    app = create_app(memory_engine(make_settings()), CollectorRegistry())
    with TestClient(app, headers=AUTH_HEADERS) as client:
        r = client.post("/v1/tasks", json={"type": "echo", "payload": {"n": 1}})
        assert r.status_code == 202, r.text
        # One hop, through the API's own executor, never Starlette's anyio pool.
        assert hops == ["own executor"]
        hops.clear()
        bad = client.post("/v1/tasks", json={"type": "echo", "payload": {"n": 1}, "delay_seconds": -1})
        assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/delay_seconds"
        assert len(hops) == 1
