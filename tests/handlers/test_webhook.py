"""webhook: real requests to a local HTTP server; the SSRF guard refuses before connecting."""

from __future__ import annotations

import ipaddress
import json
import socket
import time

import pytest

from conveyor.errors import PermanentError, RetryableError
from tests.support.servers import free_port
from worker.handlers.webhook import Guard, address_problem, webhook

INTERNAL = {"allowedCidrs": ["127.0.0.0/8", "::1/128"]}  # the local test server


async def test_post_json_with_headers(bare_ctx, http_server, connections):
    result = await webhook(
        {"url": http_server.url("/ok?x=1"), "json": {"order": 7}, "headers": {"X-Token": "abc"}},
        bare_ctx(INTERNAL),
    )
    assert result["status_code"] == 200 and result["url"] == http_server.url("/ok?x=1")
    echo = result["json"]
    assert echo["method"] == "POST" and echo["body"] == '{"order": 7}'
    assert echo["headers"]["X-Token"] == "abc"
    assert echo["headers"]["Content-Type"] == "application/json"
    assert echo["headers"]["Host"] == f"127.0.0.1:{http_server.port}"
    assert [a[0] for a in connections] == ["127.0.0.1"]


async def test_get_by_name_keeps_the_host_header_and_returns_text(bare_ctx, http_server):
    result = await webhook(
        {"url": http_server.url("/text", "localhost"), "method": "GET"}, bare_ctx(INTERNAL)
    )
    assert result["body"] == "plain words" and "json" not in result
    assert http_server.hits[0].method == "GET"
    assert http_server.hits[0].headers["Host"] == f"localhost:{http_server.port}"


async def test_large_answers_are_truncated(bare_ctx, http_server):
    result = await webhook({"url": http_server.url("/big"), "method": "GET"}, bare_ctx(INTERNAL))
    assert result["truncated"] and len(result["body"]) == 64 * 1024


@pytest.mark.parametrize("path", ["/garbage", "/emoji-json", "/big"])
async def test_the_stored_result_stays_small_whatever_the_answer(bare_ctx, http_server, path):
    """The result goes into the task record (JSON with escapes, DynamoDB's 400 KB item): an
    answer of undecodable bytes or astral characters must not grow it past the cap."""
    result = await webhook({"url": http_server.url(path), "method": "GET"}, bare_ctx(INTERNAL))
    stored = json.dumps(result)  # ensure_ascii, as the task record is written
    assert len(stored) < 100 * 1024, len(stored)
    assert result["truncated"] and "json" not in result
    assert result["body"]


@pytest.mark.parametrize("code", [500, 503, 408, 429])
async def test_server_errors_are_retryable(bare_ctx, http_server, code):
    with pytest.raises(RetryableError, match=f"answered {code}"):
        await webhook({"url": http_server.url(f"/status/{code}")}, bare_ctx(INTERNAL))


@pytest.mark.parametrize("code", [400, 404, 410])
async def test_client_errors_are_final(bare_ctx, http_server, code):
    with pytest.raises(PermanentError, match=f"answered {code}") as caught:
        await webhook({"url": http_server.url(f"/status/{code}")}, bare_ctx(INTERNAL))
    assert not isinstance(caught.value, RetryableError)


async def test_redirects_are_not_followed(bare_ctx, http_server):
    with pytest.raises(PermanentError, match="redirects are not followed"):
        await webhook({"url": http_server.url("/redirect")}, bare_ctx(INTERNAL))
    assert http_server.paths() == ["/redirect"]  # the Location (/ok) was never requested


async def test_timeout_is_retryable(bare_ctx, http_server):
    with pytest.raises(RetryableError, match="timed out"):
        await webhook({"url": http_server.url("/slow"), "timeout": 0.3}, bare_ctx(INTERNAL))


async def test_timeout_bounds_the_whole_request(bare_ctx, http_server):
    started = time.monotonic()
    with pytest.raises(RetryableError, match=r"timed out after 0\.5s"):
        await webhook({"url": http_server.url("/drip"), "timeout": 0.5}, bare_ctx(INTERNAL))
    assert time.monotonic() - started < 1.5  # not the 3 s the answer takes


async def test_connection_refused_is_retryable(bare_ctx):
    port = free_port()  # nobody listens on it
    with pytest.raises(RetryableError, match="cannot connect"):
        await webhook({"url": f"http://127.0.0.1:{port}/"}, bare_ctx(INTERNAL))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/ok",
        "http://localhost:{port}/ok",
        "http://[::1]:{port}/ok",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/hook",
        "http://[fe80::1]/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0:{port}/ok",
    ],
)
async def test_private_addresses_are_refused_before_connecting(bare_ctx, http_server, connections, url):
    with pytest.raises(PermanentError, match="refused"):
        await webhook({"url": url.format(port=http_server.port)}, bare_ctx())
    assert connections == [] and http_server.hits == []


async def test_refused_if_any_resolved_address_is_private(bare_ctx, connections, monkeypatch):
    """A name with one public and one private address (or DNS rebinding) is refused."""

    def resolver(host, port, *args, **kwargs):
        assert host == "hooks.example.test"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(PermanentError, match=r"10\.0\.0\.7, a private address"):
        await webhook({"url": "https://hooks.example.test/x"}, bare_ctx())
    assert connections == []


async def test_connects_to_the_address_it_checked(bare_ctx, http_server, connections, monkeypatch):
    """The checked address is the one dialled: the name is not resolved a second time."""
    answers = iter(["127.0.0.1", "10.0.0.9"])  # a rebinding resolver: second answer private

    def resolver(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    result = await webhook({"url": f"http://rebind.test:{http_server.port}/ok"}, bare_ctx(INTERNAL))
    assert result["status_code"] == 200
    assert [a[0] for a in connections] == ["127.0.0.1"]
    assert http_server.hits[0].headers["Host"] == f"rebind.test:{http_server.port}"


def test_address_classification():
    public = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8", "2002:5db8:d822::1"]
    assert [address_problem(ipaddress.ip_address(a)) for a in public] == [None] * 4
    kinds = {
        "127.0.0.1": "loopback",
        "::1": "loopback",
        "10.0.0.1": "private",
        "172.16.5.4": "private",
        "fd00::1": "private",
        "169.254.169.254": "link-local",
        "fe80::1": "link-local",
        "::ffff:127.0.0.1": "loopback",
        "224.0.0.1": "multicast",
        "0.0.0.0": "private",
        "100.64.0.1": "non-global",
        "fec0::1": "site-local",
        "2002:7f00:1::1": "loopback (embedded 127.0.0.1)",
        "2002:c0a8:1::": "private (embedded 192.168.0.1)",
        "2002:a9fe:a9fe::": "link-local (embedded 169.254.169.254)",
    }
    assert {a: address_problem(ipaddress.ip_address(a)) for a in kinds} == kinds


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"url": "ftp://example.com/x"}, "http:// or https://"),
        ({"url": "/relative"}, "http:// or https://"),
        ({"url": "https://example.com", "json": {}, "body": "x"}, "not both"),
    ],
)
async def test_bad_payloads_fail_permanently(bare_ctx, connections, payload, message):
    with pytest.raises(PermanentError, match=message):
        await webhook(payload, bare_ctx())
    assert connections == []


async def test_payload_cannot_override_framing_headers(bare_ctx, http_server):
    headers = {"Host": "metadata.internal", "Content-Length": "999", "X-Ok": "yes"}
    result = await webhook(
        {"url": http_server.url("/ok"), "body": "hi", "headers": headers}, bare_ctx(INTERNAL)
    )
    echo = result["json"]
    assert echo["headers"]["Host"] == f"127.0.0.1:{http_server.port}"
    assert (
        echo["headers"]["Content-Length"] == "2" and echo["body"] == "hi" and echo["headers"]["X-Ok"] == "yes"
    )


@pytest.mark.parametrize("value", [True, "false", "true", 1])
async def test_the_old_all_or_nothing_option_is_refused_clearly(bare_ctx, http_server, connections, value):
    with pytest.raises(PermanentError, match=r"allowPrivateNetworks is no longer supported.*allowedCidrs"):
        await webhook({"url": http_server.url("/ok")}, bare_ctx({"allowPrivateNetworks": value}))
    assert connections == [] and http_server.hits == []


EVERYTHING = {"allowedCidrs": ["0.0.0.0/0", "::/0"]}


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.170.2/v2/credentials",  # the ECS/EKS credentials endpoint
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[fd00:ec2::253]/",  # the EC2 IPv6 DNS resolver, same family
        "http://[fe80::1]/hook",
        "http://[::ffff:169.254.169.254]/latest/",
        "http://[::ffff:a9fe:a9fe]/latest/",
        "http://[2002:a9fe:a9fe::1]/latest/",  # 6to4
        "http://[64:ff9b::a9fe:a9fe]/latest/",  # NAT64
        "http://[::169.254.169.254]/latest/",  # IPv4-compatible
    ],
)
@pytest.mark.parametrize(
    "options", [EVERYTHING, {**EVERYTHING, "allowedHosts": ["*.test", "169.254.169.254"]}]
)
async def test_metadata_and_link_local_are_refused_whatever_the_options(bare_ctx, connections, url, options):
    with pytest.raises(PermanentError, match=r"refused whatever the options|not in this TaskType"):
        await webhook({"url": url}, bare_ctx(options))
    assert connections == []


async def test_a_name_resolving_to_metadata_is_refused_even_when_listed(bare_ctx, connections, monkeypatch):
    def resolver(host, port, *args, **kwargs):
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00:ec2::254", port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    options = {"allowedHosts": ["imds.internal.test"], **EVERYTHING}
    with pytest.raises(PermanentError, match="cloud metadata"):
        await webhook({"url": "http://imds.internal.test/"}, bare_ctx(options))
    assert connections == []


@pytest.mark.parametrize(
    "url",
    [
        "http://[2002:7f00:1::1]:{port}/ok",  # 6to4 of 127.0.0.1
        "http://[2002:a00:1::1]/hook",  # 6to4 of 10.0.0.1
        "http://[fec0::1]/hook",  # site-local
        "http://[64:ff9b::a00:1]/hook",  # NAT64 of 10.0.0.1
    ],
)
async def test_6to4_nat64_and_site_local_are_refused_by_default(bare_ctx, http_server, connections, url):
    with pytest.raises(PermanentError, match="refused"):
        await webhook({"url": url.format(port=http_server.port)}, bare_ctx())
    assert connections == []


async def test_allowed_hosts_is_the_only_set_of_hosts_called(bare_ctx, http_server, connections, monkeypatch):
    asked = []

    def resolver(host, port, *args, **kwargs):
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    options = {"allowedHosts": ["hooks.partner.test", "*.corp.test"]}
    with pytest.raises(PermanentError, match=r"not in this TaskType's options\.allowedHosts"):
        await webhook({"url": "https://elsewhere.test/x"}, bare_ctx(options))
    with pytest.raises(PermanentError, match="allowedHosts"):
        await webhook({"url": "https://corp.test.evil.test/x"}, bare_ctx(options))
    assert asked == [] and connections == []  # refused before resolving or connecting


def test_allowed_hosts_may_be_private_but_not_this_machine():
    guard = Guard.from_options({"allowedHosts": ["billing.internal", "*.svc.cluster.local"]})
    private, loopback = ipaddress.ip_address("10.0.0.7"), ipaddress.ip_address("127.0.0.1")
    assert guard.refusal("billing.internal", private) is None
    assert guard.refusal("Orders.NS.svc.cluster.local.", private) is None
    assert guard.refusal("billing.internal", ipaddress.ip_address("93.184.216.34")) is None
    assert "loopback" in (guard.refusal("billing.internal", loopback) or "")
    for local in ("0.0.0.0", "::", "2002:7f00:1::1", "::ffff:127.0.0.1", "224.0.0.1", "fec0::1"):
        assert guard.refusal("billing.internal", ipaddress.ip_address(local)), local
    assert "allowedHosts" in (guard.refusal("other.internal", private) or "")
    with_cidr = Guard.from_options({"allowedHosts": ["billing.internal"], "allowedCidrs": ["127.0.0.1/32"]})
    assert with_cidr.refusal("billing.internal", loopback) is None


def test_allowed_cidrs_open_only_their_networks():
    guard = Guard.from_options({"allowedCidrs": ["10.20.0.0/16", "fd12:3456::/32"]})
    assert guard.refusal("a", ipaddress.ip_address("10.20.3.4")) is None
    assert guard.refusal("a", ipaddress.ip_address("fd12:3456::1")) is None
    assert "private" in (guard.refusal("a", ipaddress.ip_address("10.21.0.1")) or "")
    assert "loopback" in (guard.refusal("a", ipaddress.ip_address("127.0.0.1")) or "")
    assert guard.refusal("a", ipaddress.ip_address("8.8.8.8")) is None  # public stays open


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"allowedCidrs": "10.0.0.0/8"}, "options.allowedCidrs: must be a list"),
        ({"allowedCidrs": ["10.0.0.0/33"]}, "options.allowedCidrs"),
        ({"allowedCidrs": ["intranet"]}, "options.allowedCidrs"),
        ({"allowedHosts": [""]}, "options.allowedHosts"),
        ({"allowedHosts": ["*"]}, "options.allowedHosts"),
        ({"allowedHosts": ["a.*.test"]}, "options.allowedHosts"),
        ({"allowedHosts": [3]}, "options.allowedHosts"),
    ],
)
async def test_bad_options_fail_permanently_naming_the_option(bare_ctx, connections, options, message):
    with pytest.raises(PermanentError, match=message):
        await webhook({"url": "https://example.com/"}, bare_ctx(options))
    assert connections == []


async def test_a_listed_loopback_cidr_reaches_a_local_service_by_name(bare_ctx, http_server):
    options = {"allowedHosts": ["localhost"], "allowedCidrs": ["127.0.0.0/8", "::1/128"]}
    result = await webhook({"url": http_server.url("/ok", "localhost"), "method": "GET"}, bare_ctx(options))
    assert result["status_code"] == 200
