"""A fault-injecting HTTP reverse proxy between Conveyor and the moto server, on loopback.

Point ``AWS_ENDPOINT_URL`` at it and every boto3 call passes through. Per request, drawn
from a seeded RNG:

- ``error_rate``: answered with an AWS error *without* forwarding: a throttling error in
  the protocol the service speaks (DynamoDB ``ThrottlingException`` /
  ``ProvisionedThroughputExceededException``, SQS ``RequestThrottled`` via
  ``x-amzn-query-error``, S3 ``SlowDown``) or a 500/503. botocore retries them and
  ``conveyor.aws.clients.translated`` turns what is left into ``Unavailable``, as in
  production.
- ``drop_rate``: the connection is reset: half the time before the request is forwarded,
  half after (the request took effect but its answer is lost -- the case that makes a
  retried conditional write fail its condition).
- ``latency``: up to this many seconds added before forwarding.

``down()`` makes AWS unreachable (the listener closes, open connections are reset, new ones
are refused); ``up()`` brings it back on the same port.

HTTP/1.1 is parsed with h11 and forwarded with httpx; the Host header passes through
unchanged, so SigV4 signatures and moto's queue URLs are those the client expects.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import h11
import httpx

from tests.support.servers import free_port

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "content-length"}


@dataclass
class Faults:
    error_rate: float = 0.0
    drop_rate: float = 0.0
    latency: float = 0.0


def _service(headers: dict[str, str], body: bytes) -> tuple[str, str]:
    """(service, operation) of an AWS request."""
    target = headers.get("x-amz-target", "")
    if target.startswith("DynamoDB"):
        return "dynamodb", target.split(".", 1)[-1]
    if target.startswith("AmazonSQS"):
        return "sqs", target.split(".", 1)[-1]
    if body.startswith(b"Action="):
        return "sqs-query", body.split(b"&", 1)[0][7:].decode()
    return "s3", ""


def aws_error(service: str, rng: random.Random) -> tuple[int, list[tuple[str, str]], bytes, str]:
    """(status, headers, body, label) of a throttling or server error as ``service`` sends it."""
    server_error = rng.random() < 0.3
    if service == "dynamodb":
        if server_error:
            code, status = "InternalServerError", 500
        else:
            code = rng.choice(["ThrottlingException", "ProvisionedThroughputExceededException"])
            status = 400
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "injected"})
        return status, [("content-type", "application/x-amz-json-1.0")], body.encode(), code
    if service in ("sqs", "sqs-query"):
        code, status = ("ServiceUnavailable", 503) if server_error else ("RequestThrottled", 400)
        if service == "sqs":
            body = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": "injected"}).encode()
            return (
                status,
                [("content-type", "application/x-amz-json-1.0"), ("x-amzn-query-error", f"{code};Sender")],
                body,
                code,
            )
        xml = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
            "<Message>injected</Message></Error></ErrorResponse>"
        )
        return status, [("content-type", "text/xml")], xml.encode(), code
    code, status = ("InternalError", 500) if server_error else ("SlowDown", 503)
    xml = f"<Error><Code>{code}</Code><Message>injected</Message></Error>"
    return status, [("content-type", "application/xml")], xml.encode(), code


class FaultProxy:
    def __init__(self, upstream: str, faults: Faults | None = None, seed: int = 1) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.port = 0
        self.counts: Counter[str] = Counter()  # forwarded, error:<code>, drop:before|after, latency
        self.operations: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fault-proxy")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- control, from any thread -------------------------------------------------------

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> FaultProxy:
        self._thread.start()
        self._run(self._start())
        return self

    def stop(self) -> None:
        self._run(self._down())
        if self._client is not None:
            self._run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def set(self, **faults: float) -> None:
        with self._lock:
            for k, v in faults.items():
                setattr(self.faults, k, v)

    def down(self) -> None:
        self._run(self._down())

    def up(self) -> None:
        self._run(self._listen())

    def injected(self) -> int:
        with self._lock:
            return sum(n for k, n in self.counts.items() if k.startswith(("error:", "drop:")))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    # -- the loop -------------------------------------------------------------------------

    async def _start(self) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        self._client = httpx.AsyncClient(timeout=60, limits=limits)
        if not self.port:
            self.port = free_port()
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def _draw(self) -> tuple[str, float]:
        with self._lock:
            f = self.faults
            r = self.rng.random()
            delay = self.rng.uniform(0, f.latency) if f.latency else 0.0
            if r < f.error_rate:
                return "error", delay
            if r < f.error_rate + f.drop_rate:
                return ("drop:before" if self.rng.random() < 0.5 else "drop:after"), delay
            return "ok", delay

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    return
                if not await self._answer(conn, writer, request, body):
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _read_request(
        conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and request is None:
                    return None, b""
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return request, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _answer(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> bool:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        target = request.target.decode()
        service, operation = _service(headers, body)
        faulty = not target.startswith("/moto-api")
        kind, delay = self._draw() if faulty else ("ok", 0.0)
        if operation:
            with self._lock:
                self.operations[f"{service}:{operation}"] += 1
        if delay:
            self._count("latency")
            await asyncio.sleep(delay)
        if kind == "error":
            with self._lock:
                status, extra, payload, code = aws_error(service, self.rng)
            self._count(f"error:{code}")
            await self._respond(conn, writer, status, extra, payload)
            return True
        if kind == "drop:before":
            self._count(kind)
            writer.transport.abort()
            return False
        assert self._client is not None
        forward = [(k, v) for k, v in headers.items() if k not in HOP]
        if "accept-encoding" not in headers:
            forward.append(("accept-encoding", "identity"))  # httpx would ask for gzip
        try:
            response = await self._client.request(
                request.method.decode(), self.upstream + target, headers=forward, content=body
            )
        except httpx.HTTPError:
            writer.transport.abort()  # upstream gone: so is this connection
            return False
        if kind == "drop:after":
            self._count(kind)
            writer.transport.abort()
            return False
        self._count("forwarded")
        out = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in HOP]
        length = response.headers.get("content-length") if request.method == b"HEAD" else None
        await self._respond(conn, writer, response.status_code, out, response.content, length)
        return True

    @staticmethod
    async def _respond(
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        length: str | None = None,
    ) -> None:
        headers = [*headers, ("content-length", length or str(len(body)))]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
        if body:
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
