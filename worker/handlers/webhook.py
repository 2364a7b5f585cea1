"""``webhook``: one HTTP request to a URL, with an SSRF guard.

The guard resolves the host once, refuses the request if *any* resolved address is
private, loopback, link-local, site-local or otherwise not globally routable, looking
inside IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, NAT64, Teredo), and then
connects to exactly the addresses it checked: the URL's host is replaced by the address,
the original name travels in the Host header and TLS SNI (so certificates are still
verified against the name). A second DNS answer (rebinding) therefore never reaches the
socket. Redirects are not followed, since their target would escape the check; proxies
from the environment are ignored for the same reason.

A TaskType opens the guard narrowly, never wholesale: ``options.allowedCidrs`` lists
networks that may be reached although not public, ``options.allowedHosts`` the only host
names this type may call (their private addresses are then allowed; loopback only through
``allowedCidrs``). Link-local addresses, the cloud metadata service (169.254.169.254,
fd00:ec2::/32) among them, are refused whatever the options say.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.errors import PermanentError, RetryableError
from worker.handlers import handler
from worker.handlers.context import Context
from worker.handlers.options import domain_listed, string_list

if TYPE_CHECKING:
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_BODY_BYTES = 64 * 1024  # read from the answer
# The body as stored in the task record (JSON, escapes included), which DynamoDB caps at 400 KB.
MAX_RESULT_BODY = 96 * 1024
DEFAULT_TIMEOUT = 10.0
RETRYABLE_STATUS = frozenset({408, 429})
# Set by the client from the request itself; a payload's values would corrupt the framing.
FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~0.1 s of CPU: once per process, not once per task.
    import httpx

    return httpx.create_ssl_context()


# Reachable by no option: the instance metadata service (IMDS) and every link-local
# address (169.254/16 and fe80::/10 hold metadata, DNS and time services); over IPv6, EC2
# serves the same from fd00:ec2::/32 (254 metadata, 253 DNS, 123 time).
_METADATA = (ipaddress.ip_network("169.254.169.254/32"), ipaddress.ip_network("fd00:ec2::/32"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated, still routed by some networks


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and may be routed to)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):  # 64:ff9b::a.b.c.d, ::a.b.c.d
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [v4 for v4 in found if v4 is not None]


def never_allowed(ip: IPAddress) -> str | None:
    """Why no option can open ``ip`` (None: options may)."""
    for candidate in (ip, *embedded_ipv4(ip)):
        if any(candidate in net for net in _METADATA):  # False across IP versions
            return "cloud metadata"
        if candidate.is_link_local:
            return "link-local"
    return None


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
    if isinstance(ip, ipaddress.IPv6Address) and ip in _SITE_LOCAL:
        return "site-local"
    for v4 in embedded_ipv4(ip):  # 2002:7f00:1:: is 6to4 for 127.0.0.1, yet "global"
        problem = address_problem(v4)
        if problem:
            return f"{problem} (embedded {v4})"
    if not ip.is_global:  # e.g. 100.64.0.0/10, carrier-grade NAT
        return "non-global"
    return None


@dataclass(frozen=True)
class Guard:
    """The TaskType's ``allowedHosts`` / ``allowedCidrs``, checked."""

    hosts: tuple[str, ...] = ()
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Guard:
        if "allowPrivateNetworks" in options and options["allowPrivateNetworks"] is not False:
            raise PermanentError(
                "options.allowPrivateNetworks is no longer supported: list what this TaskType may "
                "reach in options.allowedHosts (host names) or options.allowedCidrs (networks)"
            )
        hosts = string_list(options, "allowedHosts") or []
        for host in hosts:
            if not host.removeprefix("*.") or "*" in host.removeprefix("*."):
                raise PermanentError(f"options.allowedHosts: {host!r} is not a host name or *.domain")
        cidrs = []
        for text in string_list(options, "allowedCidrs") or []:
            try:
                cidrs.append(ipaddress.ip_network(text, strict=False))
            except ValueError as exc:
                raise PermanentError(f"options.allowedCidrs: {exc}") from exc
        return cls(tuple(h.lower().rstrip(".") for h in hosts), tuple(cidrs))

    def host_listed(self, host: str) -> bool:
        return domain_listed(host.lower().rstrip("."), self.hosts)

    def host_refusal(self, host: str) -> str | None:
        """Why ``host`` is refused by name (before resolving it); None if it may be called."""
        if self.hosts and not self.host_listed(host):
            return f"url: host {host!r} is not in this TaskType's options.allowedHosts"
        return None

    def refusal(self, host: str, ip: IPAddress) -> str | None:
        """Why ``ip`` (an address of ``host``) is refused; None to connect."""
        by_name = self.host_refusal(host)
        if by_name:
            return by_name
        forbidden = never_allowed(ip)
        if forbidden:
            return f"url: {host} resolves to {ip}, a {forbidden} address; refused whatever the options"
        problem = address_problem(ip)
        if problem is None or any(ip in net for net in self.cidrs):
            return None
        on_this_machine = ip.is_loopback or ip.is_unspecified or ip.is_multicast
        if self.hosts and problem in ("private", "non-global") and not on_this_machine:
            return None  # a listed host may live on a private network, not on this machine
        return (
            f"url: {host} resolves to {ip}, a {problem} address; refused "
            "(list it in the TaskType's options.allowedCidrs or options.allowedHosts to allow it)"
        )


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

    guard = Guard.from_options(ctx.options)
    by_name = guard.host_refusal(host)
    if by_name:  # before any DNS lookup
        raise PermanentError(by_name)
    addresses = await resolve(host, port)
    for ip in addresses:
        refusal = guard.refusal(host, ip)
        if refusal:
            raise PermanentError(refusal)
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
            parsed = json.loads(content)
        except ValueError:
            pass
        else:
            if len(json.dumps(parsed)) <= MAX_RESULT_BODY:
                result["json"] = parsed
                return result
    body = fit_json_string(text, MAX_RESULT_BODY)
    result["body"] = body
    result["truncated"] = truncated or len(body) < len(text)
    return result


def fit_json_string(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose JSON encoding (as the task record stores it, with
    escapes) takes at most ``limit`` bytes: 64 KiB of invalid bytes decode to U+FFFD, six
    bytes each once escaped, which would be 384 KiB of result."""
    if len(json.dumps(text)) <= limit:
        return text
    size = 2  # the quotes
    for end, char in enumerate(text):
        size += len(json.dumps(char)) - 2
        if size > limit:
            return text[:end]
    return text
