"""Failed authentications are limited per client address (CONVEYOR_AUTH_FAILURE_LIMIT):
past the limit an address gets 429 before its token is even checked, and X-Forwarded-For
from an untrusted peer, or left of a trusted proxy's entry, does not buy a fresh budget."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.auth import client_key
from tests.security.test_auth import problem

BAD = {"Authorization": "Bearer not-a-token"}


def client(api: TestClient, address: str, trusted: str = "127.0.0.1") -> TestClient:
    """The same app as uvicorn serves it (proxy_headers=True), seen from ``address``."""
    return TestClient(ProxyHeadersMiddleware(api.app, trusted_hosts=trusted), client=(address, 40000))


def test_an_address_that_keeps_failing_is_held_off_before_its_token_is_checked(secured, auth_tokens):
    api = secured(auth_failure_limit="3/minute")
    attacker = client(api, "203.0.113.9")
    for _ in range(3):
        problem(attacker.get("/v1/tasks", headers=BAD), 401)
    r = attacker.get("/v1/tasks", headers=BAD)
    assert 1 <= int(r.headers["retry-after"]) <= 60 and "failed authentications" in problem(r, 429)["detail"]
    # Held off before the check: a valid token from there waits too (no oracle for guesses).
    problem(attacker.get("/v1/tasks", headers=auth_tokens.headers("all")), 429)
    # No token is no guess; open routes stay open; another address is not held back.
    problem(attacker.get("/v1/tasks"), 401)
    assert attacker.get("/healthz").status_code == 200
    other = client(api, "198.51.100.20")
    assert other.get("/v1/tasks", headers=auth_tokens.headers("all")).status_code == 200
    problem(other.get("/v1/tasks", headers=BAD), 401)


def test_x_forwarded_for_does_not_buy_a_fresh_budget(secured):
    api = secured(auth_failure_limit="3/minute")
    # A direct caller (not a trusted proxy): its X-Forwarded-For is ignored.
    direct = client(api, "203.0.113.9")
    codes = [
        direct.get("/v1/tasks", headers={**BAD, "X-Forwarded-For": f"192.0.2.{i}"}).status_code
        for i in range(6)
    ]
    assert codes == [401, 401, 401, 429, 429, 429]
    # Through a trusted proxy, the caller can only prepend entries: the right-most one not a
    # trusted proxy (the one the proxy appended) is the address counted.
    proxied = client(api, "127.0.0.1")
    codes = [
        proxied.get(
            "/v1/tasks", headers={**BAD, "X-Forwarded-For": f"192.0.2.{i}, 10.9.9.9, 198.51.100.7"}
        ).status_code
        for i in range(6)
    ]
    assert codes == [401, 401, 401, 429, 429, 429]


def test_the_failure_limit_can_be_turned_off(secured):
    api = secured(auth_failure_limit="off")
    assert {api.get("/v1/tasks", headers=BAD).status_code for _ in range(30)} == {401}
    with pytest.raises(ValueError, match="CONVEYOR_AUTH_FAILURE_LIMIT"):
        secured(auth_failure_limit="many per minute")


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.9", "ip:203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "ip:2001:db8:1:2::/64"),
        ("testclient", "ip:testclient"),
    ],
)
def test_ipv6_callers_are_counted_per_64(host, key):
    assert client_key({"client": (host, 1)}) == key
