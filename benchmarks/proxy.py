"""A reverse proxy in front of moto that counts AWS requests by action and can add latency.

Every system under test reaches AWS through it, so requests per task are counted at one
place, the same way for all, and ``delay`` adds the same round-trip time to every call
(moto on loopback answers in a few ms; real SQS and DynamoDB take ~5-20 ms).

Counting: the JSON protocols name the action in ``X-Amz-Target`` (``AmazonSQS.SendMessage``,
``DynamoDB_20120810.PutItem``); SQS's query protocol puts it in the form body
(``Action=SendMessage``). For batch actions it also counts entries, and for ReceiveMessage
the messages returned, so "messages per receive" can be reported.

Attribution: the systems run side by side, so each request is counted under the first
resource name its body carries (a queue or table made by ``benchmarks.stack.unique``, e.g.
``cv-123-4``); ``GET /__bench__/counts?tags=cv-123-4`` sums the named ones. Requests that
name no resource (ListQueues) are counted under "".

Control endpoints (never forwarded): ``GET /__bench__/counts[?tags=a,b]``,
``POST /__bench__/reset``, ``POST /__bench__/delay?ms=15``.

Run: ``python -m benchmarks.proxy --upstream http://127.0.0.1:5055 --port 5056``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

CONTROL = "/__bench__/"
# Not forwarded: they describe one hop, and aiohttp sets its own.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
BATCH_FIELDS = {
    "SendMessageBatch": "Entries",
    "DeleteMessageBatch": "Entries",
    "ChangeMessageVisibilityBatch": "Entries",
    "TransactWriteItems": "TransactItems",
}


def classify(headers: Any, body: bytes, path: str = "/") -> tuple[str, str]:
    """(service, action) of one AWS request."""
    target = headers.get("X-Amz-Target", "")
    if target:
        prefix, _, action = target.partition(".")
        service = "sqs" if prefix.startswith("AmazonSQS") else "dynamodb" if "DynamoDB" in prefix else prefix
        return service, action
    if body[:7] == b"Action=" or b"&Action=" in body:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        action = form.get("Action", ["?"])[0]
        # The credential scope names the service: .../us-east-1/sqs/aws4_request
        auth = headers.get("Authorization", "")
        service = auth.split("/")[3] if auth.count("/") >= 4 else "sqs"
        return service, action
    return "other", path.strip("/").split("/", 1)[0] or "/"


# The names benchmarks.stack.unique makes for the systems' queues and tables:
# <prefix>-<pid>-<n>.
RESOURCE = re.compile(rb"(?:cv|celery-results|celery|floor)-\d+-\d+")


def tag(body: bytes) -> str:
    """The system a request belongs to: the first resource name in its body."""
    found = RESOURCE.search(body)
    return found.group().decode() if found else ""


def entries(action: str, body: bytes) -> int:
    """How many items a batch request carries (1 for everything else)."""
    if action == "BatchWriteItem":
        try:
            return sum(len(v) for v in json.loads(body)["RequestItems"].values())
        except (ValueError, KeyError, TypeError):
            return 1
    name = BATCH_FIELDS.get(action)
    if name is None:
        return 1
    try:
        return len(json.loads(body)[name])
    except (ValueError, KeyError, TypeError):
        return 1


@dataclass
class Counts:
    requests: Counter[str] = field(default_factory=Counter)
    items: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, dict[str, int]]:
        return {"requests": dict(self.requests), "items": dict(self.items)}

    def __iadd__(self, other: Counts) -> Counts:
        self.requests += other.requests
        self.items += other.items
        return self


def total(by_tag: dict[str, Counts], tags: list[str] | None) -> Counts:
    out = Counts()
    for name, counts in by_tag.items():
        if tags is None or name in tags:
            out += counts
    return out


class Proxy:
    def __init__(self, upstream: str, delay_ms: float = 0.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay_ms / 1000.0
        self.counts: dict[str, Counts] = {}
        self.session: ClientSession | None = None

    async def startup(self, app: web.Application) -> None:
        # Long polls wait 20 s upstream: no read timeout shorter than that.
        self.session = ClientSession(
            connector=TCPConnector(limit=0, force_close=False),
            timeout=ClientTimeout(total=None, sock_read=120),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )

    async def cleanup(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def control(self, request: web.Request) -> web.Response:
        what = request.path[len(CONTROL) :]
        if what == "counts":
            tags = request.query.get("tags")
            return web.json_response(total(self.counts, tags.split(",") if tags else None).to_json())
        if what == "reset" and request.method == "POST":
            self.counts = {}
            return web.json_response({"ok": True})
        if what == "delay" and request.method == "POST":
            self.delay = float(request.query.get("ms", "0")) / 1000.0
            return web.json_response({"delay_ms": self.delay * 1000})
        return web.json_response({"error": f"unknown control {what!r}"}, status=404)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(CONTROL):
            return await self.control(request)
        assert self.session is not None
        body = await request.read()
        service, action = classify(request.headers, body, request.path)
        key = f"{service}.{action}"
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self.session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as upstream:
            data = await upstream.read()
            # Counted when answered: a long poll that spans a reset belongs to the new window,
            # where its messages are processed.
            counts = self.counts.setdefault(tag(body), Counts())
            counts.requests[key] += 1
            counts.items[key] += entries(action, body)
            if action == "ReceiveMessage" and upstream.status == 200:
                counts.items["sqs.ReceiveMessage.messages"] += _received(data)
            out = web.Response(status=upstream.status, body=data)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_HEADERS:
                    out.headers.add(name, value)
            return out


def _received(data: bytes) -> int:
    if data[:1] == b"{":
        try:
            return len(json.loads(data).get("Messages", []))
        except ValueError:
            return 0
    return data.count(b"<Message>")


def make_app(upstream: str, delay_ms: float = 0.0) -> web.Application:
    proxy = Proxy(upstream, delay_ms)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.on_startup.append(proxy.startup)
    app.on_cleanup.append(proxy.cleanup)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    web.run_app(
        make_app(args.upstream, args.delay_ms), host="127.0.0.1", port=args.port, print=None, access_log=None
    )


# -- driving it from the harness ---------------------------------------------------------


@dataclass
class ProxyProcess:
    upstream: str
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProxyProcess:
        from conveyor.local import wait_http

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.proxy", "--upstream", self.upstream, "--port", str(self.port)],
            env={**os.environ},
        )
        wait_http(self.url + CONTROL + "counts", proc=self.proc)
        return self

    def stop(self) -> None:
        from conveyor.local import stop_process

        stop_process(self.proc)

    def _call(self, what: str, method: str = "GET") -> dict[str, Any]:
        data = b"" if method == "POST" else None
        req = urllib.request.Request(self.url + CONTROL + what, method=method, data=data)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def counts(self, tags: list[str] | None = None) -> dict[str, dict[str, int]]:
        return self._call("counts" + (f"?tags={','.join(tags)}" if tags else ""))

    def reset(self) -> None:
        self._call("reset", "POST")

    def set_delay(self, ms: float) -> None:
        self._call(f"delay?ms={ms:g}", "POST")


if __name__ == "__main__":
    main()
