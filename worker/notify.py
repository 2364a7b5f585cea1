"""Completion webhooks, the I/O: a notify message in, one signed POST out, the attempt
recorded on the task, and the message deleted or hidden for the next try (conveyor.lifecycle
decides which).

The POST goes through the webhook handler's SSRF guard: the host is resolved once, every
address is checked (private, loopback and the like refused unless the TaskType's
``spec.notify.allowPrivateNetworks``; link-local and cloud metadata refused always), and
the connection goes to a checked address with the name in Host and SNI. Redirects are not
followed. A webhook never changes its task's outcome: the task is finished before.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from conveyor import lifecycle
from conveyor import notify as signing
from conveyor.blocking import BlockingCalls
from conveyor.engine import Engine
from conveyor.errors import PermanentError, RetryableError
from conveyor.model import Delivery, Message, Task
from conveyor.registry import TaskType
from worker.deletes import DeleteBatcher
from worker.handlers.webhook import Guard, _tls_context, resolve

log = logging.getLogger("conveyor.worker")

# allowPrivateNetworks opens every network but what Guard refuses whatever it is told
# (link-local, cloud metadata).
_ANY = Guard(cidrs=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")))
_PUBLIC_ONLY = Guard()
ERROR_CHARS = 300


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str | None
    retryable: bool
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def target(task: Task, tasktype: TaskType | None) -> tuple[str | None, bool]:
    """The URL to POST to (the task's, else its type's) and whether private networks may be."""
    notify = tasktype.notify if tasktype else None
    allow = bool(notify and notify.allow_private_networks)
    return task.notify_url or (notify.url if notify else None), allow


async def post(
    url: str, allow_private: bool, headers: dict[str, str], body: bytes, timeout: float
) -> Attempt:
    """One signed POST through the SSRF guard; never raises."""
    import httpx

    try:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise PermanentError("not an absolute http(s) URL")
        host = parsed.raw_host.decode("ascii")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        guard = _ANY if allow_private else _PUBLIC_ONLY
        addresses = await resolve(host, port)
        for ip in addresses:
            refusal = guard.refusal(host, ip)
            if refusal:
                raise PermanentError(refusal.removeprefix("url: ").split(" (list it")[0])
    except (PermanentError, RetryableError, httpx.InvalidURL, ValueError) as exc:
        return Attempt(None, str(exc)[:ERROR_CHARS], isinstance(exc, RetryableError))
    send = {
        **headers,
        "Content-Type": "application/json",
        "Host": parsed.netloc.decode("ascii").rsplit("@", 1)[-1],
    }
    extensions: dict[str, Any] = {}
    if parsed.scheme == "https":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            extensions["sni_hostname"] = host
    last = "no address"
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(
                follow_redirects=False, trust_env=False, timeout=timeout, verify=_tls_context()
            ) as client,
        ):
            for ip in addresses:  # the checked addresses only
                request = client.build_request(
                    "POST", parsed.copy_with(host=str(ip)), headers=send, content=body, extensions=extensions
                )
                try:
                    response = await client.send(request)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                    continue
                code = response.status_code
                error = None if 200 <= code < 300 else f"HTTP {code}"
                return Attempt(code, error, True)
    except (TimeoutError, httpx.TimeoutException):
        return Attempt(None, f"timed out after {timeout:g}s", True)
    except httpx.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS], True)
    return Attempt(None, f"cannot connect to {host}: {last}"[:ERROR_CHARS], True)


class Notifier:
    """Handles notify messages for the worker."""

    def __init__(self, engine: Engine, io: BlockingCalls, deletes: DeleteBatcher, rng: random.Random) -> None:
        self.engine, self.store, self.clock = engine, engine.store, engine.clock
        self.io, self.deletes, self.rng = io, deletes, rng
        self.settings = engine.settings

    async def handle(self, message: Message) -> None:
        current = await self.io(self.store.get, message.task_id, True)
        skip = lifecycle.on_notify(current)
        if skip is not None or current is None:
            self.deletes.add(message.receipt, message.lane)
            return
        msg_id = signing.webhook_id(current)
        attempt_no = lifecycle.delivery_attempt(current, msg_id)
        attempt = await self.attempt(current, msg_id)
        decision = lifecycle.after_delivery(
            attempt_no, ok=attempt.ok, retryable=attempt.retryable, jitter=self.rng.random()
        )
        delivery = Delivery(
            at=self.clock.now(),
            webhook_id=msg_id,
            status_code=attempt.status_code,
            duration_ms=attempt.duration_ms,
            error=attempt.error,
        )
        recorded = await self.io(self.store.record_delivery, current, delivery, decision.state)
        log.info(
            "task %s: webhook attempt %d: %s -> %s",
            current.id,
            attempt_no,
            attempt.status_code or attempt.error,
            decision.state.value,
        )
        if recorded is None:
            # Another copy of the notify message recorded an attempt meanwhile: it goes on.
            self.deletes.add(message.receipt, message.lane)
            return
        match decision.action:
            case lifecycle.Hide(seconds=seconds):
                queue = self.engine.lane(message.lane)
                await self.io(queue.change_visibility, message.receipt, max(1, seconds))
            case _:
                self.deletes.add(message.receipt, message.lane)

    async def attempt(self, task: Task, msg_id: str) -> Attempt:
        url, allow_private = target(task, self.engine.registry.get(task.type))
        if not url:
            return Attempt(None, "no notify URL (the TaskType's spec.notify was removed?)", False)
        secret = await self.io(signing.secret_for, self.settings.webhook_secrets_dir, task)
        if secret is None:
            return Attempt(None, "no signing secret for this token or task type; not sent", False)
        body = signing.payload(task)
        try:
            headers = signing.signed_headers(secret, msg_id, self.clock.now(), body)
        except signing.BadSecret as exc:
            return Attempt(None, str(exc), False)
        started = time.monotonic()
        result = await post(url, allow_private, headers, body, self.settings.webhook_timeout_seconds)
        return Attempt(
            result.status_code, result.error, result.retryable, int((time.monotonic() - started) * 1000)
        )
