"""Real servers for tests, on loopback: a free port (a port nobody listens on, for a
refused connection too), and an ASGI app under uvicorn in a thread (real HTTP, real
sockets, in-process so a test can reach into the app)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

# The product's own (conveyor run picks its ports with it): one definition for both.
from conveyor.local import free_port

__all__ = ["ServerThread", "free_port"]


class ServerThread:
    """uvicorn over ``app`` on a socket already bound to 127.0.0.1 (port 0: a free one),
    so no other process can take the port between choosing and serving it. A context
    manager, or ``start()``/``stop()``."""

    def __init__(self, app: Any, port: int = 0, **config: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it; without it, Nagle and delayed ACKs add ~40 ms
        # to every small response on a socket handed to uvicorn.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port: int = self.sock.getsockname()[1]
        options: dict[str, Any] = {
            "log_level": "warning",
            "access_log": False,
            "lifespan": "off",
            "timeout_graceful_shutdown": 2,
            **config,
        }
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn exited during startup"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
