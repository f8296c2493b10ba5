"""Limits that hold (issue 26, finding 6): the client address is the socket's unless a trusted
proxy names another, against uvicorn run as ``thresher serve`` runs it; the limiter's memory
is bounded without lifting a lockout; replicas sharing Redis share the limits (issue 29)."""

from __future__ import annotations

import contextlib

import httpx
import pytest

from tests.api.conftest import make_app
from tests.api.servers import needs_redis, redis_server, serve_app
from thresher.api.guard import RateLimiter, SharedRateLimiter, client_address
from thresher.api.stores import MemoryStore

WRONG = {"Authorization": "Bearer guess"}


def forwarded(address: str, **headers: str) -> dict[str, str]:
    return {"x-forwarded-for": address, **headers}


@pytest.fixture(scope="module")
def keyed(provider, local_lm):
    app = make_app(provider, local_lm, api_keys=["right"], auth_failures_per_minute=3)
    with serve_app(app) as base, httpx.Client(base_url=base) as client:
        yield client


def test_a_fresh_forwarded_header_does_not_escape_the_failure_limit(keyed):
    statuses = [
        keyed.get("/v1/models", headers=forwarded(f"10.1.{i // 250}.{i % 250}", **WRONG))
        .status_code
        for i in range(40)
    ]  # fmt: skip
    # Before: 40 of 40 were 401 (uvicorn believed the header from loopback).
    assert statuses[:3] == [401] * 3 and set(statuses[3:]) == {429}


@pytest.fixture(scope="module")
def proxied(provider, local_lm):
    """Behind a trusted proxy on loopback: its X-Forwarded-For is believed."""
    app = make_app(
        provider, local_lm, api_keys=["right"], auth_failures_per_minute=3,
        trusted_proxies=["127.0.0.1"],
    )  # fmt: skip
    with serve_app(app) as base, httpx.Client(base_url=base) as client:
        yield client


def test_a_trusted_proxy_names_the_client_and_a_spoofed_prefix_changes_nothing(proxied):
    for _ in range(3):
        proxied.get("/v1/models", headers=forwarded("10.0.0.1", **WRONG))
    # The attacker, whatever it writes left of what the proxy appended, is blocked ...
    spoofed = forwarded("10.0.0.9, 10.0.0.1", **WRONG)
    assert proxied.get("/v1/models", headers=spoofed).status_code == 429
    # ... and another client behind the same proxy is not.
    ok = proxied.get("/v1/models", headers=forwarded("10.0.0.2", Authorization="Bearer right"))
    assert ok.status_code == 200


def test_no_keys_rotating_the_header_does_not_defeat_the_rate_limit(provider, local_lm):
    app = make_app(provider, local_lm, rate_limit_per_minute=5)
    with serve_app(app) as base, httpx.Client(base_url=base) as client:
        statuses = [
            client.get("/v1/models", headers=forwarded(f"10.2.0.{i}")).status_code for i in range(8)
        ]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429] * 3


def test_a_flood_of_callers_never_lifts_a_lockout():
    limiter = RateLimiter(per_minute=3, max_callers=100)
    for _ in range(4):
        limiter.wait("victim-of-its-own-guesses")
    assert limiter.blocked("victim-of-its-own-guesses") > 0
    for i in range(100_000):  # before: every bucket was cleared at 100,000 callers
        limiter.wait(f"caller-{i}")
    assert limiter.blocked("victim-of-its-own-guesses") > 0
    assert len(limiter) <= 101  # bounded: the oldest idle callers were forgotten


def test_when_every_caller_is_blocked_new_ones_share_one_bucket():
    limiter = RateLimiter(per_minute=1, max_callers=10)
    for i in range(10):
        limiter.wait(f"c{i}")
        limiter.wait(f"c{i}")  # blocked
    assert limiter.wait("new-1") == 0.0  # the shared bucket's one token
    assert limiter.wait("new-2") > 0  # the flood shares it
    assert all(limiter.blocked(f"c{i}") > 0 for i in range(10))


@pytest.mark.parametrize(
    "peer, header, trusted, client",
    [
        ("10.0.0.5", "1.2.3.4", [], "10.0.0.5"),  # not a proxy: the header is ignored
        ("10.0.0.5", "1.2.3.4", ["10.0.0.0/8"], "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.7", ["10.0.0.0/8"], "1.2.3.4"),
        ("10.0.0.5", "", ["10.0.0.0/8"], "10.0.0.5"),
        ("::1", "2001:db8::1", ["::1"], "2001:db8::1"),
    ],
)
def test_the_client_address(peer, header, trusted, client):
    from ipaddress import ip_network

    headers = [(b"x-forwarded-for", header.encode())] if header else []
    scope = {"client": (peer, 5000), "headers": headers}
    assert client_address(scope, tuple(ip_network(t) for t in trusted)) == client


def test_a_bad_trusted_proxy_setting_names_itself():
    from thresher.api.settings import service_settings
    from thresher.core.errors import ConfigError

    with pytest.raises(ConfigError, match="THRESHER_TRUSTED_PROXIES"):
        service_settings(trusted_proxies=["not-an-address"])


@pytest.mark.parametrize(
    "tenants, message",
    [
        ({"anonymous": ["k"]}, "not allowed"),
        ({"0123456789abcdef01234567": ["k"]}, "not allowed"),
        ({"team": []}, "no keys"),
        ({"a": ["k"], "b": ["k"]}, "also a key"),
        ({"../up": ["k"]}, "not allowed"),
    ],
)
def test_bad_tenants_settings_name_the_setting(tenants, message):
    from thresher.api.settings import service_settings
    from thresher.core.errors import ConfigError

    with pytest.raises(ConfigError, match="THRESHER_TENANTS") as caught:
        service_settings(tenants=tenants)
    assert message in str(caught.value)


@pytest.mark.skipif(needs_redis.args[0], reason=needs_redis.kwargs["reason"])
def test_replicas_sharing_redis_share_one_allowance_per_caller(provider, local_lm, tmp_path):
    """Issue 29: limiter state in the shared store. Round-robin over two replicas gives a key
    its limit once, not once per replica; failed keys from one address likewise."""
    with redis_server() as (url, _), contextlib.ExitStack() as stack:
        clients = []
        for n in range(2):
            app = make_app(
                provider, local_lm, api_keys=["right"], rate_limit_per_minute=3,
                auth_failures_per_minute=2, redis_url=url, redis_prefix="limits",
                data_dir=tmp_path / f"replica-{n}",
            )  # fmt: skip
            base = stack.enter_context(serve_app(app))
            clients.append(stack.enter_context(httpx.Client(base_url=base)))
        right = {"Authorization": "Bearer right"}
        statuses = [clients[i % 2].get("/v1/models", headers=right).status_code for i in range(5)]
        assert statuses == [200, 200, 200, 429, 429]  # before: 6 granted, 3 on each replica
        wrong = [clients[i % 2].get("/v1/models", headers=WRONG).status_code for i in range(4)]
        assert wrong == [401, 401, 429, 429]


def test_the_shared_limiter_counts_granted_requests_only():
    limiter = SharedRateLimiter(per_minute=2, store=MemoryStore(), namespace="limits")
    assert [limiter.wait("a") for _ in range(2)] == [0.0, 0.0]
    refused = [limiter.wait("a") for _ in range(5)]
    assert all(0 < wait <= 120 for wait in refused)
    assert limiter.blocked("a") > 0 and limiter.blocked("b") == 0.0
    assert limiter.wait("b") == 0.0  # another caller has its own allowance


def test_the_shared_limiter_asks_the_store_once_per_granted_request():
    calls = []

    class Counting(MemoryStore):
        def incr(self, *args, **kwargs):
            calls.append(args[1])
            return super().incr(*args, **kwargs)

    limiter = SharedRateLimiter(per_minute=100, store=Counting(), namespace="limits")
    for _ in range(10):
        assert limiter.wait("a") == 0.0
    # The minute before is read once and remembered (it cannot change any more): 11 calls,
    # 12 if a minute ends during the loop; asking each time would be 20.
    assert len(calls) <= 10 + 2
