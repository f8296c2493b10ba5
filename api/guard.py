"""The front door, as plain ASGI (no per-request task or body copy): API keys, body size, rate
limit, and request metrics. Refusals carry the OpenAI error body.

Failed keys are limited per client address (``auth_failures_per_minute``): past the limit an
address is refused every request, right key or not, until its bucket refills, so guessing keys
costs a minute per handful. A request's caller (a digest of its key, never the key) rides in
the ASGI scope for the routes that keep per-key state (selection jobs: api/state.py ``Caller``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thresher.api.errors import error_body
from thresher.api.metrics import Metrics

OPEN_PATHS = frozenset({"/healthz"})


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
    """One token bucket per caller (API key, or client address when keys are off)."""

    def __init__(self, per_minute: int, max_callers: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_callers = max_callers
        self._buckets: dict[str, TokenBucket] = {}

    def wait(self, caller: str) -> float:
        """Take one token of ``caller``'s; 0.0 if granted, else the seconds to wait."""
        return self._bucket(caller).take(time.monotonic())

    def blocked(self, caller: str) -> float:
        """The seconds ``caller`` must wait for a token, taking none (0.0: not blocked)."""
        bucket = self._buckets.get(caller)
        return 0.0 if bucket is None else bucket.peek(time.monotonic())

    def _bucket(self, caller: str) -> TokenBucket:
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= self.max_callers:
                self._buckets.clear()  # bounded memory under a flood of distinct callers
            now = time.monotonic()
            bucket = self._buckets[caller] = TokenBucket(self.per_minute, self.per_minute, now)
        return bucket


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
    ) -> None:
        self.app = app
        self.api_keys = [k.encode() for k in api_keys]
        # The caller recorded for a key: a digest, so no key is kept beyond this list.
        self.callers = [hashlib.sha256(k).hexdigest()[:24] for k in self.api_keys]
        self.max_body_bytes = max_body_bytes
        self.limiter = RateLimiter(rate_limit_per_minute) if rate_limit_per_minute else None
        self.failures = (
            RateLimiter(auth_failures_per_minute)
            if auth_failures_per_minute and self.api_keys
            else None
        )
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
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

    def _identify(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[bool, str | None]:
        """(authenticated, caller): open when no keys are set; a wrong key counts as a failure
        of the client's address."""
        if not self.api_keys:
            return True, None
        key = _bearer(headers.get(b"authorization", b""))
        if key is not None:
            for known, caller in zip(self.api_keys, self.callers, strict=True):
                if hmac.compare_digest(key, known):
                    return True, caller
            if self.failures is not None:
                self.failures.wait(_address(scope))
        return False, None

    def _refusal(self, scope: Scope) -> tuple[int, dict, dict[str, str]] | None:
        headers = dict(scope["headers"])
        blocked = self.failures.blocked(_address(scope)) if self.failures is not None else 0.0
        authenticated, caller = (False, None) if blocked else self._identify(scope, headers)
        scope["thresher.authenticated"] = authenticated
        scope["thresher.caller"] = caller
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
            who = caller or _address(scope)
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


def _address(scope: Scope) -> str:
    return str((scope.get("client") or ("-",))[0])


def _bearer(value: bytes) -> bytes | None:
    scheme, _, token = value.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else None


async def _respond(send: Send, status: int, body: dict, headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
