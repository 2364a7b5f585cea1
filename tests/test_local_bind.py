"""`make run` / `conveyor run` listens on loopback only: the API and the worker's metrics."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from conveyor.local import LocalStack, wait_http
from conveyor.settings import Settings
from tests.support.servers import free_port


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_local_stack_binds_the_worker_metrics_to_loopback(tmp_path, monkeypatch):
    # Linux routes all of 127/8 to lo: a server bound to 0.0.0.0 answers on 127.0.0.2, one
    # bound to 127.0.0.1 does not. Check that the probe can tell them apart here.
    with socket.create_server(("0.0.0.0", 0)) as wide:
        if not answers("127.0.0.2", wide.getsockname()[1]):
            pytest.skip("127.0.0.2 is not routed to loopback on this machine")
    monkeypatch.delenv("CONVEYOR_WORKER_METRICS_HOST", raising=False)
    api_port, metrics_port = free_port(), free_port()
    stack = LocalStack(
        api_port=api_port,
        moto_port=0,
        worker_metrics_port=metrics_port,
        state_dir=tmp_path,
        extra_env={"CONVEYOR_POLL_WAIT_SECONDS": "1"},  # a prompt stop at the end
    )
    with stack.running():
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_http(url, proc=stack.children[-1])  # the worker, which the stack does not wait for
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b"conveyor_worker" in r.read()
        assert not answers("127.0.0.2", metrics_port)
        assert answers("127.0.0.1", api_port) and not answers("127.0.0.2", api_port)


def test_a_pod_worker_still_listens_on_every_interface(monkeypatch):
    """Prometheus scrapes the pod IP: outside `conveyor run` the default stays 0.0.0.0."""
    monkeypatch.delenv("CONVEYOR_WORKER_METRICS_HOST", raising=False)
    assert Settings.from_env().worker_metrics_host == "0.0.0.0"
    monkeypatch.setenv("CONVEYOR_WORKER_METRICS_HOST", "127.0.0.1")
    assert Settings.from_env().worker_metrics_host == "127.0.0.1"
