"""``webhook``: one HTTP request to a URL, with an SSRF guard.

The guard resolves the host once, refuses the request if *any* resolved address is
private, loopback, link-local or otherwise not globally routable (unless the TaskType
sets ``options.allowPrivateNetworks: true``), and then connects to exactly the
addresses it checked: the URL's host is replaced by the address, the original name
travels in the Host header and TLS SNI (so certificates are still verified against the
name). A second DNS answer (rebinding) therefore never reaches the socket. Redirects
are not followed, since their target would escape the check; proxies from the
environment are ignored for the same reason.

A 2xx answer succeeds. 408, 429 and 5xx answers and network errors are retried (the
TaskType's backoff); any other 4xx, a 3xx, or a refused address fail the task at once.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from conveyor.errors import PermanentError, RetryableError
from worker.handlers import handler
from worker.handlers.context import Context

if TYPE_CHECKING:
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_BODY_BYTES = 64 * 1024  # kept in the task record, which DynamoDB caps at 400 KB
DEFAULT_TIMEOUT = 10.0
RETRYABLE_STATUS = frozenset({408, 429})
# Set by the client from the request itself; a payload's values would corrupt the framing.
FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~0.1 s of CPU: once per process, not once per task.
    import httpx

    return httpx.create_ssl_context()


def address_problem(ip: IPAddress) -> str | None:
    """Why a connection to ``ip`` is refused by default (None: a public address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    for attribute, what in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_private", "private"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attribute):
            return what
    if not ip.is_global:  # e.g. 100.64.0.0/10, carrier-grade NAT
        return "non-global"
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order, without duplicates."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_NONAME:
            raise PermanentError(f"url: host {host!r} does not exist") from exc
        raise RetryableError(f"url: cannot resolve {host!r}: {exc}") from exc
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 zone id
        if ip not in found:
            found.append(ip)
    return found


def _parse_url(raw: Any) -> httpx.URL:
    import httpx

    try:
        url = httpx.URL(str(raw))
    except (httpx.InvalidURL, ValueError) as exc:
        raise PermanentError(f"url: not a valid URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise PermanentError("url: must be an absolute http:// or https:// URL")
    return url


def _body(payload: dict[str, Any]) -> dict[str, Any]:
    if "json" in payload and "body" in payload:
        raise PermanentError("json, body: give one of them, not both")
    if "json" in payload:
        return {"content": json.dumps(payload["json"]).encode(), "content_type": "application/json"}
    if "body" in payload:
        return {"content": str(payload["body"]).encode(), "content_type": "text/plain; charset=utf-8"}
    return {"content": None, "content_type": None}


@handler("webhook")
async def webhook(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    # httpx is imported on first use: it costs ~0.25 s of CPU, paid by every worker start
    # (one per KEDA job) whether or not it ever runs a webhook.
    import httpx

    url = _parse_url(payload.get("url"))
    method = str(payload.get("method", "POST")).upper()
    timeout = float(payload.get("timeout", DEFAULT_TIMEOUT))
    body = _body(payload)
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    shown = str(url.copy_with(username=None, password=None))  # no credentials in results or logs

    addresses = await resolve(host, port)
    if ctx.options.get("allowPrivateNetworks") is not True:  # a stray "false" string must not open it
        for ip in addresses:
            problem = address_problem(ip)
            if problem:
                raise PermanentError(
                    f"url: {host} resolves to {ip}, a {problem} address; refused "
                    "(set options.allowPrivateNetworks on the TaskType to allow it)"
                )
    ctx.raise_if_cancelled()

    given = (payload.get("headers") or {}).items()
    try:
        headers = httpx.Headers({str(k): str(v) for k, v in given if str(k).lower() not in FRAMING_HEADERS})
    except UnicodeEncodeError as exc:
        raise PermanentError(f"headers: values must be ASCII: {exc}") from exc
    if body["content_type"] and "content-type" not in headers:
        headers["Content-Type"] = body["content_type"]
    headers["Host"] = url.netloc.decode("ascii").rsplit("@", 1)[-1]
    extensions: dict[str, Any] = {}
    if url.scheme == "https":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            extensions["sni_hostname"] = host

    started = time.monotonic()
    last_error: Exception | None = None
    try:
        # httpx's timeout bounds each network operation; this bounds the whole request, so
        # a server that drips its answer cannot hold the worker's slot for longer.
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(
                follow_redirects=False, trust_env=False, timeout=timeout, verify=_tls_context()
            ) as client,
        ):
            for ip in addresses:  # the checked addresses only, in order, until one connects
                pinned = url.copy_with(host=str(ip))
                request = client.build_request(
                    method, pinned, headers=headers, content=body["content"], extensions=extensions
                )
                try:
                    response = await client.send(request, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    last_error = exc
                    continue
                except httpx.TransportError as exc:
                    raise RetryableError(f"{method} {shown}: {type(exc).__name__}: {exc}") from exc
                try:
                    content, truncated = await _read_capped(response)
                finally:
                    await response.aclose()
                return _outcome(method, shown, response, content, truncated, started)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise RetryableError(f"{method} {shown}: timed out after {timeout:g}s") from exc
    raise RetryableError(f"{method} {shown}: cannot connect to {host}: {last_error}")


async def _read_capped(response: httpx.Response) -> tuple[bytes, bool]:
    import httpx

    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return b"".join(chunks)[:MAX_BODY_BYTES], True
    except httpx.TransportError as exc:
        raise RetryableError(f"reading the response failed: {type(exc).__name__}: {exc}") from exc
    return b"".join(chunks), False


def _outcome(
    method: str, url: str, response: httpx.Response, content: bytes, truncated: bool, started: float
) -> dict[str, Any]:
    code = response.status_code
    text = content.decode(response.encoding or "utf-8", errors="replace")
    summary = f"{method} {url} answered {code} {response.reason_phrase}"
    if code >= 500 or code in RETRYABLE_STATUS:
        raise RetryableError(f"{summary}: {text[:500]}")
    if 300 <= code < 400:
        location = response.headers.get("location", "")
        raise PermanentError(f"{summary}; redirects are not followed (Location: {location})")
    if code >= 400:
        raise PermanentError(f"{summary}: {text[:500]}")
    result: dict[str, Any] = {
        "status_code": code,
        "url": url,
        "content_type": response.headers.get("content-type"),
        "elapsed_ms": round((time.monotonic() - started) * 1000),
        "truncated": truncated,
    }
    if not truncated and "json" in (result["content_type"] or ""):
        try:
            result["json"] = json.loads(content)
            return result
        except ValueError:
            pass
    result["body"] = text
    return result
