"""Shared stores: what replicas of the proxy must agree on, behind one namespaced seam.

A :class:`Store` holds JSON values by ``(namespace, key)`` and atomic counters that expire. The
proxy keeps forwarded message forms in it (namespace ``forms``, through :class:`StoreCache`, the
:class:`thresher.compression.conversation.MessageCache` seam); the originals of elided spans and
the limiter's state fit the same calls (a limiter needs :meth:`Store.incr`: one counter per
caller and window, created with its expiry in the same atomic step).

- :class:`MemoryStore`: in process, bounded (least recently used values out). The default.
- :class:`RedisStore`: a Redis server (``THRESHER_REDIS_URL``) that every replica shares.
- :class:`FallbackStore`: Redis first, a local store beside it. Every value read from or
  written to Redis is kept locally too, so when Redis goes away a replica goes on from what it
  has seen (with one warning, not an error per request) and tries Redis again a little later.

The SQLite message cache of one machine's workers stays in api/compression_service.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Protocol, runtime_checkable

from thresher.compression.conversation import LRUMessageCache

log = logging.getLogger(__name__)


@runtime_checkable
class Store(Protocol):
    """Namespaced JSON values and expiring counters.

    ``namespace`` separates kinds of state (``forms``, ``originals``, ``limits``); a key that
    belongs to a tenant includes the tenant (the caller builds it). ``ttl_s`` None: kept until
    the store's own bound pushes it out.
    """

    def get(self, namespace: str, key: str) -> Any | None: ...

    def put(self, namespace: str, key: str, value: Any, ttl_s: float | None = None) -> None: ...

    def incr(self, namespace: str, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        """Add ``amount`` and return the new value; a counter that did not exist starts at 0
        and expires ``ttl_s`` after it was created (a fixed window), in one atomic step."""
        ...


class StoreUnavailable(Exception):
    """The shared store did not answer (connection refused, timed out, gone away)."""


class MemoryStore:
    """A bounded in-process :class:`Store` (the default of one process).

    Args:
        max_entries: Values kept at most, over all namespaces.
        max_chars: Characters of stored values kept at most.
    """

    def __init__(self, max_entries: int = 20_000, max_chars: int = 64_000_000) -> None:
        self._values = LRUMessageCache(max_entries, max_chars)
        self._expiry: dict[str, float] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def get(self, namespace: str, key: str) -> Any | None:
        full = f"{namespace}:{key}"
        until = self._expiry.get(full)
        if until is not None and time.monotonic() >= until:
            return None
        return self._values.get(full)

    def put(self, namespace: str, key: str, value: Any, ttl_s: float | None = None) -> None:
        full = f"{namespace}:{key}"
        if ttl_s is not None:
            with self._lock:
                if len(self._expiry) > 4 * self._values.max_entries:
                    now = time.monotonic()
                    self._expiry = {k: t for k, t in self._expiry.items() if t > now}
                self._expiry[full] = time.monotonic() + ttl_s
        self._values.put(full, value)

    def incr(self, namespace: str, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        full = f"{namespace}:{key}"
        now = time.monotonic()
        with self._lock:
            found = self._counters.get(full)
            if found is None or found[1] <= now:
                if len(self._counters) >= self._values.max_entries:  # bounded: expired go first
                    self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
                    if len(self._counters) >= self._values.max_entries:
                        self._counters.clear()
                found = (0, now + ttl_s if ttl_s is not None else float("inf"))
            value = found[0] + amount
            self._counters[full] = (value, found[1])
            return value

    def __len__(self) -> int:
        return len(self._values)


class RedisStore:
    """A :class:`Store` on a Redis server, shared by every replica that names the same URL.

    Values are JSON strings under ``{prefix}:{namespace}:{key}``; Redis's own memory policy
    bounds them, and ``ttl_s`` (default ``default_ttl_s``) lets old ones go. Every call has a
    short socket timeout: a Redis that does not answer costs a request ``timeout_s`` at most,
    then :class:`StoreUnavailable`.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS, a password in the URL).
        prefix: The first part of every key (several deployments may share one Redis).
        timeout_s: Connect and read timeout of each call.
        default_ttl_s: Expiry of a value put without one (None: no expiry).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "thresher",
        timeout_s: float = 0.5,
        default_ttl_s: float | None = 7 * 24 * 3600,
    ) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - the api extra installs it
            raise ImportError(
                "THRESHER_REDIS_URL needs the redis client: pip install 'thresher[api]'"
            ) from exc
        self.url = url
        self.prefix = prefix
        self.default_ttl_s = default_ttl_s
        self._errors = (redis.ConnectionError, redis.TimeoutError, OSError)
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            health_check_interval=0, decode_responses=True,
        )  # fmt: skip

    def _key(self, namespace: str, key: str) -> str:
        return f"{self.prefix}:{namespace}:{key}"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise StoreUnavailable(f"Redis at {self.url} did not answer: {exc}") from exc

    def ping(self) -> None:
        """:class:`StoreUnavailable` unless the server answers."""
        self._call(self._client.ping)

    def get(self, namespace: str, key: str) -> Any | None:
        raw = self._call(self._client.get, self._key(namespace, key))
        return None if raw is None else json.loads(raw)

    def put(self, namespace: str, key: str, value: Any, ttl_s: float | None = None) -> None:
        ttl = ttl_s if ttl_s is not None else self.default_ttl_s
        raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        px = None if ttl is None else max(1, int(ttl * 1000))
        self._call(self._client.set, self._key(namespace, key), raw, px=px)

    def incr(self, namespace: str, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        full = self._key(namespace, key)
        pipe = self._client.pipeline(transaction=True)  # MULTI/EXEC: both or neither
        pipe.incrby(full, amount)
        if ttl_s is not None:
            pipe.pexpire(full, max(1, int(ttl_s * 1000)), nx=True)  # set once, at creation
        return int(self._call(pipe.execute)[0])

    def close(self) -> None:
        self._client.close()


class FallbackStore:
    """A shared store with a local one beside it, for a shared store that may go away.

    Reads ask the shared store first (what another replica wrote wins) and keep what they find
    locally; writes go to both. When the shared store fails, the failure is logged once as a
    warning, calls go to the local store only for ``retry_s``, and then the shared store is
    tried again (a recovery is logged too). Nothing the caller sees changes but where values
    come from.

    Args:
        shared: Usually a :class:`RedisStore`.
        local: What a replica keeps for itself (a :class:`MemoryStore`).
        retry_s: How long to leave a failed shared store alone.
    """

    def __init__(self, shared: Store, local: Store, retry_s: float = 5.0) -> None:
        self.shared = shared
        self.local = local
        self.retry_s = retry_s
        self.failures = 0
        self._down_until = 0.0
        self._lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        """Whether calls are going to the local store only just now."""
        return time.monotonic() < self._down_until

    def _shared(self, fn: str, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        if self.degraded:
            return False, None
        try:
            out = getattr(self.shared, fn)(*args, **kwargs)
        except StoreUnavailable as exc:
            with self._lock:
                first = self._down_until == 0.0
                self.failures += 1
                self._down_until = time.monotonic() + self.retry_s
            if first:
                log.warning("shared store unavailable, caching locally (retry in %gs): %s",
                            self.retry_s, exc)  # fmt: skip
            return False, None
        if self._down_until:
            with self._lock:
                if self._down_until:
                    self._down_until = 0.0
                    log.warning("shared store is back; values go to it again")
        return True, out

    def get(self, namespace: str, key: str) -> Any | None:
        ok, found = self._shared("get", namespace, key)
        if ok and found is not None:
            self.local.put(namespace, key, found)
            return found
        return self.local.get(namespace, key)

    def put(self, namespace: str, key: str, value: Any, ttl_s: float | None = None) -> None:
        self.local.put(namespace, key, value, ttl_s)
        self._shared("put", namespace, key, value, ttl_s)

    def incr(self, namespace: str, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        ok, value = self._shared("incr", namespace, key, amount, ttl_s)
        return int(value) if ok else self.local.incr(namespace, key, amount, ttl_s)


class StoreCache:
    """One namespace of a :class:`Store` as a :class:`MessageCache` (get/put of JSON values).

    Args:
        store: Where values live.
        namespace: ``forms`` for forwarded message forms, ``originals`` for elided spans.
    """

    def __init__(self, store: Store, namespace: str = "forms") -> None:
        self.store = store
        self.namespace = namespace

    def get(self, key: str) -> Any | None:
        return self.store.get(self.namespace, key)

    def put(self, key: str, value: Any) -> None:
        self.store.put(self.namespace, key, value)


def shared_store(settings: Any) -> FallbackStore | None:
    """The Redis-backed store that ``settings.redis_url`` names (None when unset), with a local
    store of ``compress_cache_entries`` values beside it. A Redis that does not answer at
    startup is logged, not fatal: the replica starts on its local store and tries again."""
    url = getattr(settings, "redis_url", None)
    if not url:
        return None
    redis = RedisStore(
        url, prefix=settings.redis_prefix, timeout_s=settings.redis_timeout_ms / 1000,
        default_ttl_s=settings.redis_ttl_s,
    )  # fmt: skip
    store = FallbackStore(redis, MemoryStore(settings.compress_cache_entries))
    try:
        redis.ping()
    except StoreUnavailable as exc:
        log.warning("%s; starting on the local store", exc)
    return store
