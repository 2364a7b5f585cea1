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
