"""The front door, as plain ASGI (no per-request task or body copy): API keys, body size, rate
limit, and request metrics. Refusals carry the OpenAI error body.

Failed keys are limited per client address (``auth_failures_per_minute``): past the limit an
address is refused every request, right key or not, until its bucket refills, so guessing keys
costs a minute per handful. The client address is the socket's peer; only a peer listed in
``trusted_proxies`` may name another in ``X-Forwarded-For`` (the right-most address no trusted
proxy added), so a header alone moves no caller into another's bucket. uvicorn must not rewrite
the address itself (:data:`UVICORN_OPTIONS`).

A request's caller (a digest of its key, never the key) and its tenant (the name settings map
the key to, else the digest) ride in the ASGI scope: api/state.py ``Tenant`` owns what the
request stores.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thresher.api.errors import error_body
from thresher.api.metrics import Metrics

OPEN_PATHS = frozenset({"/healthz"})
# How uvicorn must run the app (``thresher serve``, the tests' servers): the guard reads the
# client address and X-Forwarded-For itself; uvicorn's own rewrite trusts loopback by default.
UVICORN_OPTIONS = {"proxy_headers": False}
# Where callers past ``max_callers`` are counted together while every remembered one is blocked.
OVERFLOW = "\x00overflow"
Network = IPv4Network | IPv6Network


@dataclass
class TokenBucket:
    """``rate`` requests per minute with bursts up to ``rate``; refills continuously."""

    rate: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """Take one token; 0.0 if granted, else the seconds until one is free."""
        wait = self.peek(now)
        if wait == 0.0:
            self.tokens -= 1
        return wait

    def peek(self, now: float) -> float:
        """0.0 if a token is free, else the seconds until one is (takes nothing)."""
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate / 60)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * 60 / self.rate


class RateLimiter:
    """One token bucket per caller (API key, or client address when keys are off).

    Memory is bounded by ``max_callers``: a new caller makes room by forgetting the least
    recently seen caller that is not blocked (forgetting an idle caller costs it nothing it
    would not have regained). A blocked caller is never forgotten, so a flood of fresh callers
    cannot lift a lockout; while every remembered caller is blocked, new ones share one bucket.
    """

    # Remembered callers looked at per new caller for one to forget.
    PROBES = 64

    def __init__(self, per_minute: int, max_callers: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_callers = max_callers
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def wait(self, caller: str) -> float:
        """Take one token of ``caller``'s; 0.0 if granted, else the seconds to wait."""
        return self._bucket(caller).take(time.monotonic())

    def blocked(self, caller: str) -> float:
        """The seconds ``caller`` must wait for a token, taking none (0.0: not blocked)."""
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets.get(OVERFLOW) if self._full() else None
        return 0.0 if bucket is None else bucket.peek(time.monotonic())

    def __len__(self) -> int:
        return len(self._buckets)

    def _full(self) -> bool:
        return len(self._buckets) >= self.max_callers

    def _bucket(self, caller: str) -> TokenBucket:
        now = time.monotonic()
        bucket = self._buckets.get(caller)
        if bucket is not None:
            self._buckets.move_to_end(caller)
            return bucket
        if self._full() and not self._forget_one(now):
            caller = OVERFLOW  # every caller remembered is blocked: the new ones share a bucket
            bucket = self._buckets.get(caller)
            if bucket is not None:
                return bucket
        bucket = self._buckets[caller] = TokenBucket(self.per_minute, self.per_minute, now)
        return bucket

    def _forget_one(self, now: float) -> bool:
        """Forget the least recently seen caller that is not blocked; False if none is found
        among the oldest :attr:`PROBES` (blocked ones go to the back of the line)."""
        for _ in range(min(self.PROBES, len(self._buckets))):
            caller, bucket = next(iter(self._buckets.items()))
            if bucket.peek(now) == 0.0:
                del self._buckets[caller]
                return True
            self._buckets.move_to_end(caller)
        return False


class SharedRateLimiter:
    """The same limit over every replica: requests per caller counted in a shared store
    (:class:`thresher.api.stores.Store`, Redis when ``redis_url`` is set), so a caller that
    round-robins replicas gets one allowance, not one per replica.

    A sliding window from two fixed ones: this minute's count plus the last minute's, weighted
    by how much of it the sliding minute still covers. A refused request is taken back, so, as
    with a token bucket, only granted requests count. The store bounds what it keeps (Redis
    lets each counter expire after two minutes; the local fallback keeps a bounded number).

    A minute that has ended no longer changes, so its count is asked for once per caller and
    remembered (at most ``max_callers`` of them): a request costs one store call, two when it
    is refused.
    """

    WINDOW_S = 60.0

    def __init__(
        self, per_minute: int, store: Any, namespace: str, max_callers: int = 100_000
    ) -> None:
        self.per_minute = per_minute
        self.store = store
        self.namespace = namespace
        self.max_callers = max_callers
        self._ended: OrderedDict[str, int] = OrderedDict()  # counts of minutes that ended

    def wait(self, caller: str) -> float:
        """Count one request of ``caller``'s; 0.0 if granted, else the seconds to wait."""
        window, into = self._window()
        key = f"{caller}\0{window}"
        current = self.store.incr(self.namespace, key, 1, ttl_s=2 * self.WINDOW_S)
        previous = self._ended_count(caller, window - 1)
        wait = self._wait(previous, current - 1, into)
        if wait > 0:
            self.store.incr(self.namespace, key, -1, ttl_s=2 * self.WINDOW_S)
        return wait

    def blocked(self, caller: str) -> float:
        """The seconds ``caller`` must wait before a request would be granted (counts none)."""
        window, into = self._window()
        previous = self._ended_count(caller, window - 1)
        return self._wait(previous, self._count(caller, window), into)

    def _window(self) -> tuple[int, float]:
        now = time.time()  # wall time: replicas agree on it, not on their monotonic clocks
        window = int(now // self.WINDOW_S)
        return window, now - window * self.WINDOW_S

    def _count(self, caller: str, window: int) -> int:
        return self.store.incr(self.namespace, f"{caller}\0{window}", 0, ttl_s=2 * self.WINDOW_S)

    def _ended_count(self, caller: str, window: int) -> int:
        key = f"{caller}\0{window}"
        found = self._ended.get(key)
        if found is None:
            found = self._ended[key] = self._count(caller, window)
            while len(self._ended) > self.max_callers:
                self._ended.popitem(last=False)
        return found

    def _wait(self, previous: int, granted: int, into: float) -> float:
        """Seconds until one more request fits, with ``granted`` counted in this window."""
        left = 1 - into / self.WINDOW_S
        over = previous * left + granted + 1 - self.per_minute
        if over <= 0:
            return 0.0
        if previous == 0 or over > previous * left:  # only the next window can free enough
            return self.WINDOW_S - into + (over - previous * left) * self.WINDOW_S / self.per_minute
        return over * self.WINDOW_S / previous


@dataclass(frozen=True)
class Key:
    """One accepted API key: the key, the caller it is recorded as (a digest), its tenant."""

    secret: bytes
    caller: str
    tenant: str


def keyring(api_keys: Iterable[str], tenants: Mapping[str, Iterable[str]]) -> list[Key]:
    """Every accepted key with its tenant: the tenant settings name for it, else its own
    digest (a tenant of one key)."""
    named = {key: name for name, keys in tenants.items() for key in keys}
    out: list[Key] = []
    for key in dict.fromkeys([*api_keys, *named]):  # each key once, in order
        secret = key.encode()
        caller = hashlib.sha256(secret).hexdigest()[:24]
        out.append(Key(secret, caller, named.get(key, caller)))
    return out


def client_address(scope: Scope, trusted: tuple[Network, ...]) -> str:
    """The client's address: the socket peer, or, when the peer is a trusted proxy, the
    right-most ``X-Forwarded-For`` entry that no trusted proxy added (entries to its left are
    whatever the client wrote)."""
    peer = str((scope.get("client") or ("-",))[0])
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for name, value in scope["headers"]
        if name == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop[:64]
    return hops[0][:64] if hops else peer


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)


class Guard:
    """ASGI middleware in front of every route; ``/healthz`` needs no key."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: list[str],
        max_body_bytes: int,
        rate_limit_per_minute: int | None,
        metrics: Metrics,
        auth_failures_per_minute: int | None = 10,
        tenants: Mapping[str, Iterable[str]] | None = None,
        trusted_proxies: Iterable[str] = (),
        max_callers: int = 100_000,
    ) -> None:
        self.app = app
        self.keys = keyring(api_keys, tenants or {})
        self.trusted = tuple(ip_network(p, strict=False) for p in trusted_proxies)
        self.max_body_bytes = max_body_bytes
        self.max_callers = max_callers
        self.limiter: RateLimiter | SharedRateLimiter | None = (
            RateLimiter(rate_limit_per_minute, max_callers) if rate_limit_per_minute else None
        )
        self.failures: RateLimiter | SharedRateLimiter | None = (
            RateLimiter(auth_failures_per_minute, max_callers)
            if auth_failures_per_minute and self.keys
            else None
        )
        self.metrics = metrics

    def share(self, store: Any) -> None:
        """Count the rate limits in ``store`` (shared by the replicas) from now on."""
        if self.limiter is not None:
            self.limiter = SharedRateLimiter(
                self.limiter.per_minute, store, "limits", self.max_callers
            )
        if self.failures is not None:
            self.failures = SharedRateLimiter(
                self.failures.per_minute, store, "auth-failures", self.max_callers
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope["thresher.arrived"] = time.monotonic()  # deadlines count from here
        status = [500]

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        refusal = self._refusal(scope)
        try:
            if refusal is not None:
                await _respond(send_and_note, *refusal)
            else:
                await self.app(scope, self._limited(receive), send_and_note)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(label, status[0], time.perf_counter() - start)

    def _limited(self, receive: Receive) -> Receive:
        """Count a body sent without a length (chunked) and stop it at the limit."""
        seen = [0]

        async def receive_limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body_bytes:
                    self.metrics.rejected.labels("body_size").inc()
                    # Raised inside body parsing, it becomes the OpenAI-shaped 413.
                    raise HTTPException(413, self._too_large())
            return message

        return receive_limited

    def _too_large(self) -> str:
        return (
            f"The request body is over the limit of {self.max_body_bytes} bytes "
            "(THRESHER_MAX_BODY_BYTES); send a smaller body."
        )

    def _identify(self, headers: dict[bytes, bytes], address: str) -> tuple[bool, Key | None]:
        """(authenticated, key): open when no keys are set; a wrong key counts as a failure
        of the client's address."""
        if not self.keys:
            return True, None
        sent = _bearer(headers.get(b"authorization", b""))
        if sent is not None:
            for key in self.keys:
                if hmac.compare_digest(sent, key.secret):
                    return True, key
            if self.failures is not None:
                self.failures.wait(address)
        return False, None

    def _refusal(self, scope: Scope) -> tuple[int, dict, dict[str, str]] | None:
        headers = dict(scope["headers"])
        address = client_address(scope, self.trusted)
        blocked = self.failures.blocked(address) if self.failures is not None else 0.0
        authenticated, key = (False, None) if blocked else self._identify(headers, address)
        scope["thresher.authenticated"] = authenticated
        scope["thresher.caller"] = key.caller if key is not None else None
        scope["thresher.tenant"] = key.tenant if key is not None else None
        scope["thresher.address"] = address
        if scope["path"] in OPEN_PATHS:
            return None  # it answers without a key, and says less (api/routes/health.py)
        if blocked:
            self.metrics.rejected.labels("auth_failures").inc()
            return (
                429,
                error_body(
                    f"Too many failed API keys from this address; retry in {blocked:.0f} s with "
                    "a key from THRESHER_API_KEYS.",
                    "rate_limit_error",
                    None,
                    "too_many_failed_keys",
                ),
                {"retry-after": str(max(1, round(blocked)))},
            )
        if not authenticated:
            self.metrics.rejected.labels("auth").inc()
            return (
                401,
                error_body(
                    "Missing or unknown API key; send 'Authorization: Bearer <key>' with a "
                    "key from THRESHER_API_KEYS.",
                    "invalid_request_error",
                    None,
                    "invalid_api_key",
                ),
                {"www-authenticate": "Bearer"},
            )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            self.metrics.rejected.labels("body_size").inc()
            return (
                413,
                error_body(
                    self._too_large(),
                    "invalid_request_error",
                    None,
                    "request_too_large",
                ),
                {},
            )
        if self.limiter is not None:
            who = key.caller if key is not None else address
            wait = self.limiter.wait(who)
            if wait > 0:
                self.metrics.rejected.labels("rate_limit").inc()
                return (
                    429,
                    error_body(
                        f"Rate limit of {self.limiter.per_minute} requests per minute reached; "
                        f"retry in {wait:.1f} s.",
                        "rate_limit_error",
                        None,
                        "rate_limit_exceeded",
                    ),
                    {"retry-after": str(max(1, round(wait)))},
                )
        return None


def _bearer(value: bytes) -> bytes | None:
    scheme, _, token = value.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else None


async def _respond(send: Send, status: int, body: dict, headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
