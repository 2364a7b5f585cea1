"""The shared test helpers in tests/support do what their callers rely on."""

from __future__ import annotations

import threading

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from conveyor.memory import MemoryBroker
from tests.support.servers import ServerThread, free_port
from tests.support.spies import spy, spying


def test_a_server_thread_serves_real_http_and_frees_its_port() -> None:
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("hi"))])
    with ServerThread(app) as server:
        assert httpx.get(server.url + "/").text == "hi"
        port = server.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/")


def test_a_free_port_refuses_connections() -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{free_port()}/")


def test_a_spy_passes_calls_through_and_records_them_across_threads() -> None:
    broker = MemoryBroker()
    sends = spy(broker, "send")
    threads = [threading.Thread(target=broker.send, args=(f"t{i}", "echo", 0)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sends.arg(0)) == [f"t{i}" for i in range(8)]
    assert len(broker.receive(10, 0)) == 8  # the calls went through
    sends.restore()
    broker.send("after", "echo", 0)
    assert len(sends.calls) == 8


def test_spying_records_errors_and_restores() -> None:
    class Store:
        def get(self, task_id: str) -> str:
            if task_id == "missing":
                raise KeyError(task_id)
            return task_id.upper()

    store = Store()
    with spying(store, "get") as gets:
        assert store.get("a") == "A"
        with pytest.raises(KeyError):
            store.get("missing")
    assert gets.results() == ["A"] and isinstance(gets.calls[1].error, KeyError)
    assert store.get("b") == "B" and len(gets.calls) == 2  # restored: no longer recorded
