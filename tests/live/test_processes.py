"""Two real API processes over the moto server: a change made through one reaches an
event-stream client of the other, through the store alone."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

from conveyor.client import Client, TaskEvent
from conveyor.local import free_port, wait_http
from conveyor.model import Progress, Status, now
from tests.conftest import ROOT, TEST_TOKEN, service_env


def _api(settings) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = service_env(settings, "", CONVEYOR_API_PORT=str(port), CONVEYOR_MAINTENANCE_ENABLED="false")
    proc = subprocess.Popen([sys.executable, "-m", "api.main"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc=proc)
    except Exception:
        proc.kill()
        raise
    return proc, url


def test_a_change_through_one_api_process_reaches_a_stream_on_another(runtime, settings):
    (a, url_a), (b, url_b) = _api(settings), _api(settings)
    seen: list[TaskEvent] = []
    try:
        with Client(url_a, TEST_TOKEN) as client_a, Client(url_b, TEST_TOKEN) as client_b:
            task_id = client_a.submit("echo", {"hello": "b"})["id"]

            def follow() -> None:
                seen.extend(client_b.events(task_id))

            follower = threading.Thread(target=follow, daemon=True)
            follower.start()

            def until(predicate) -> None:
                deadline = time.monotonic() + 15
                while not any(predicate(e) for e in seen):
                    assert time.monotonic() < deadline, [(e.kind, e.status) for e in seen]
                    time.sleep(0.02)

            until(lambda e: e.kind == "state" and e.status == "queued")
            # A worker (this test, on the same table) claims it and reports progress.
            store = runtime.engine.store
            claimed = store.claim(task_id, "echo", "w-test", now()).task
            until(lambda e: e.kind == "state" and e.status == "running")
            store.record_progress(claimed, Progress.checked(0.5, "half", claimed.attempts, now()), [])
            until(lambda e: e.kind == "progress" and e.data["fraction"] == 0.5)
            # A cancel through process A reaches the client of process B.
            client_a.cancel(task_id)
            until(lambda e: e.kind == "state" and e.data.get("cancel_requested") is True)
            store.finish(claimed, Status.CANCELLED, now())
            follower.join(15)
            assert not follower.is_alive(), "the stream did not end at the terminal state"
    finally:
        for proc in (a, b):
            proc.send_signal(signal.SIGTERM)
        for proc in (a, b):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert seen[-1].kind == "state" and seen[-1].status == "cancelled"
    assert [e.status for e in seen if e.kind == "state"] == ["queued", "running", "running", "cancelled"]
