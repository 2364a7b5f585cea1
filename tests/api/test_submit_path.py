"""What a submit costs the API process, structurally (the figures are the benchmark's,
docs/BENCHMARKS.md): no timing here, only the choices that set the cost, and that each
cheaper part keeps what the dearer one guaranteed."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import uvicorn
import uvloop

from api.main import server_options
from api.protocol import MAX_HEAD_BYTES, BoundedHttpToolsProtocol
from tests.conftest import make_settings
from tests.support.servers import ServerThread


def test_the_api_serves_on_uvloop_with_the_bounded_httptools_parser():
    options = server_options(make_settings())
    config = uvicorn.Config(lambda scope, receive, send: None, **options)
    config.load()
    assert config.http_protocol_class is BoundedHttpToolsProtocol
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


async def _echo_size(scope, receive, send):
    """Answers with the body's size and the number of headers."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = f"{size} {len(scope['headers'])}".encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server():
    with ServerThread(_echo_size, http=BoundedHttpToolsProtocol) as running:
        yield running


def _exchange(server, chunks: list[bytes], pause: float = 0.0, responses: int = 1) -> bytes:
    """Send ``chunks`` one send() each, then read ``responses`` whole responses, or until
    the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
                time.sleep(pause)
        except OSError:
            pass  # the server closed mid-send: read what it answered
        sock.settimeout(2)
        got = b""
        try:
            while not _complete(got) or got.count(b"HTTP/1.1 ") < responses:
                part = sock.recv(65536)
                if not part:
                    break
                got += part
        except (TimeoutError, OSError):
            pass
        return got


def _complete(raw: bytes) -> bool:
    """Whether ``raw`` holds responses, each with its whole body (by content-length)."""
    if not raw:
        return False
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        if len(rest) < length:
            return False
        raw = rest[length:]
    return True


def _padding(total: int) -> list[bytes]:
    """Headers of about ``total`` bytes, one 1 KiB header per chunk."""
    line = b"x-pad: " + b"a" * 1017 + b"\r\n"
    return [line] * (total // len(line))


def test_a_head_over_the_bound_is_refused_with_431(server):
    got = _exchange(server, [b"GET / HTTP/1.1\r\nhost: x\r\n", *_padding(4 * MAX_HEAD_BYTES), b"\r\n"], 0.001)
    assert got.startswith(b"HTTP/1.1 431 "), got[:200]
    assert b"application/problem+json" in got and b"/problems/header-too-large" in got


def test_one_endless_header_value_is_refused_too(server):
    # httptools buffers a header's value until its end: the bound counts raw bytes.
    chunks = [b"GET / HTTP/1.1\r\nhost: x\r\nx-pad: ", *[b"a" * 4096] * (2 * MAX_HEAD_BYTES // 4096)]
    got = _exchange(server, [*chunks, b"\r\n\r\n"], 0.001)
    assert got.startswith(b"HTTP/1.1 431 "), got[:200]


def test_a_head_under_the_bound_is_served(server):
    pad = _padding(MAX_HEAD_BYTES - 2048)
    got = _exchange(server, [b"GET / HTTP/1.1\r\nhost: x\r\n", *pad, b"\r\n"], 0.001)
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    assert got.endswith(b"0 %d" % (len(pad) + 1))


def test_a_body_is_not_counted_as_head(server):
    body = b"b" * (8 * MAX_HEAD_BYTES)
    head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
    chunks = [head + body[:1000], *[body[i : i + 4096] for i in range(1000, len(body), 4096)]]
    got = _exchange(server, chunks, 0.001)
    assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"%d 2" % len(body)), got[:200]


def test_pipelined_requests_each_get_their_own_bound(server):
    one = b"GET / HTTP/1.1\r\nhost: x\r\n" + b"".join(_padding(MAX_HEAD_BYTES // 2)) + b"\r\n"
    got = _exchange(server, [one * 4], responses=4)
    assert got.count(b"HTTP/1.1 200 ") == 4, got[:300]


def test_work_off_the_loop_runs_in_the_callers_context():
    """The request's context (its trace span) is current in the thread, as anyio made it."""
    import contextvars
    import threading

    from api.offload import run_blocking

    span = contextvars.ContextVar("span", default="none")

    async def request() -> tuple[str, str]:
        span.set("request-1")
        return await run_blocking(lambda: (span.get(), threading.current_thread().name))

    seen, thread = asyncio.run(request())
    assert seen == "request-1" and thread.startswith("conveyor-api")


def test_the_aws_clients_skip_client_side_parameter_validation():
    from botocore.validate import ParamValidationDecorator

    from conveyor.aws import AwsBackend

    backend = AwsBackend(make_settings())
    for client in (backend.dynamodb, backend.sqs, backend.s3):
        # botocore wraps its serializer in the validator when validation is on.
        assert not isinstance(client._serializer, ParamValidationDecorator)


def _memory_app():
    from prometheus_client import CollectorRegistry

    from api.app import create_app
    from tests.support.engines import memory_engine

    registry = CollectorRegistry()
    return create_app(memory_engine(make_settings()), registry), registry


def test_a_request_is_matched_to_its_route_once_before_routing(monkeypatch):
    """The auth middleware finds the route; the request metrics take its template from
    there instead of matching every route again after the answer."""
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from tests.conftest import AUTH_HEADERS

    app, registry = _memory_app()
    calls: list[str] = []
    original = Route.matches

    def counted(self, scope):
        calls.append(self.path)
        return original(self, scope)

    monkeypatch.setattr(Route, "matches", counted)
    with TestClient(app, headers=AUTH_HEADERS) as client:
        calls.clear()
        assert client.post("/v1/tasks", json={"type": "echo"}).status_code == 202
        # Once by the auth middleware, once by the router; not a third time for metrics.
        assert calls.count("/v1/tasks") == 2
        labels = {"route": "/v1/tasks", "method": "POST", "code": "202"}
        assert registry.get_sample_value("conveyor_http_requests_total", labels) == 1.0
        # The console's mount at / matches every path the API routes do not.
        assert client.get("/v1/tasks/nonesuch/x/y").status_code == 404
        console = {"route": "/", "method": "GET", "code": "404"}
        assert registry.get_sample_value("conveyor_http_requests_total", console) == 1.0


def test_request_metrics_look_each_label_set_up_once(monkeypatch):
    from starlette.testclient import TestClient

    from tests.conftest import AUTH_HEADERS

    app, registry = _memory_app()
    metrics = app.state.conveyor.metrics
    looked_up: list[dict[str, str]] = []
    for metric in (metrics.requests, metrics.latency, metrics.submitted):
        original = metric.labels

        def counted(*args, _original=original, **kwargs):
            looked_up.append(kwargs)
            return _original(*args, **kwargs)

        monkeypatch.setattr(metric, "labels", counted)
    with TestClient(app, headers=AUTH_HEADERS) as client:
        for _ in range(3):
            assert client.post("/v1/tasks", json={"type": "echo"}).status_code == 202
    assert sorted(looked_up, key=str) == sorted(
        [
            {"type": "echo"},
            {"route": "/v1/tasks", "method": "POST", "code": "202"},
            {"route": "/v1/tasks", "method": "POST"},
        ],
        key=str,
    )
    assert registry.get_sample_value("conveyor_tasks_submitted_total", {"type": "echo"}) == 3.0
    labels = {"route": "/v1/tasks", "method": "POST", "code": "202"}
    assert registry.get_sample_value("conveyor_http_requests_total", labels) == 3.0
    timed = {"route": "/v1/tasks", "method": "POST"}
    assert registry.get_sample_value("conveyor_http_request_duration_seconds_count", timed) == 3.0


def test_a_callers_address_key_is_parsed_once():
    from api.auth import _address_key, client_key

    _address_key.cache_clear()
    for _ in range(3):
        assert client_key({"client": ("10.0.0.7", 1234)}) == "ip:10.0.0.7"
        assert client_key({"client": ("2001:db8::1", 1234)}) == "ip:2001:db8::/64"
    assert client_key({}) == "ip:unknown"
    assert _address_key.cache_info().misses == 3


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host (RFC 9112 3.2)
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n  folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nx a: 1\r\n\r\n",
        b"GET /a\x00b HTTP/1.1\r\nhost: x\r\n\r\n",
    ],
    ids=["no-host", "cl-and-te", "two-cl", "te-not-chunked-last", "obs-fold", "space-in-name", "nul-in-path"],
)
def test_ambiguous_or_malformed_requests_get_400(server, raw):
    """What h11 refused, the httptools parser refuses too: no request is framed two ways."""
    got = _exchange(server, [raw])
    assert got.startswith(b"HTTP/1.1 400 "), got[:200]


def test_an_http_1_0_request_needs_no_host(server):
    assert _exchange(server, [b"GET / HTTP/1.0\r\n\r\n"]).startswith(b"HTTP/1.1 200 ")
