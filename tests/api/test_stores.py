"""The shared stores (api/stores.py): one conformance test over every implementation, against a
real redis-server on a free port, and a Redis that goes away and comes back."""

from __future__ import annotations

import logging
import subprocess
import threading
import time

import pytest

from tests.api.servers import needs_redis, redis_server
from thresher.api.stores import (
    FallbackStore,
    MemoryStore,
    RedisStore,
    StoreCache,
    StoreUnavailable,
)
from thresher.compression.conversation import MessageCache


@pytest.fixture(scope="module")
def redis_url():
    if needs_redis.args[0]:
        pytest.skip(needs_redis.kwargs["reason"])
    with redis_server() as (url, _):
        yield url


@pytest.fixture(params=["memory", "redis", "fallback"])
def store(request):
    if request.param == "memory":
        return MemoryStore(max_entries=100)
    url = request.getfixturevalue("redis_url")
    redis = RedisStore(url, prefix=f"t{time.monotonic_ns()}")
    return redis if request.param == "redis" else FallbackStore(redis, MemoryStore())


def test_every_store_keeps_json_values_by_namespace(store):
    value = [{"type": "text", "text": "héllo"}, {"type": "image_url", "image_url": {"url": "x"}}]
    store.put("forms", "k", value)
    store.put("originals", "k", "another")
    assert store.get("forms", "k") == value
    assert store.get("originals", "k") == "another"
    assert store.get("forms", "missing") is None
    store.put("forms", "k", "replaced")
    assert store.get("forms", "k") == "replaced"
    assert isinstance(StoreCache(store), MessageCache)


def test_values_and_counters_expire(store):
    store.put("originals", "short", "gone soon", ttl_s=0.2)
    assert store.get("originals", "short") == "gone soon"
    assert store.incr("limits", "caller", 1, ttl_s=0.3) == 1
    assert store.incr("limits", "caller", 2, ttl_s=0.3) == 3  # the window is set at creation
    time.sleep(0.45)
    assert store.get("originals", "short") is None
    assert store.incr("limits", "caller", 1, ttl_s=0.3) == 1  # a new window


def test_counters_are_atomic_under_threads(store):
    def bump():
        for _ in range(200):
            store.incr("limits", "shared", 1, ttl_s=60)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.incr("limits", "shared", 0, ttl_s=60) == 800


def test_memory_store_is_bounded():
    store = MemoryStore(max_entries=10)
    for i in range(50):
        store.put("forms", str(i), "x" * 10)
        store.incr("limits", str(i), ttl_s=60)
    assert len(store) == 10
    assert store.get("forms", "49") == "x" * 10 and store.get("forms", "0") is None


@needs_redis
def test_a_redis_that_goes_away_degrades_to_local_and_comes_back(caplog):
    with redis_server() as (url, proc):
        port = url.rsplit(":", 1)[1].split("/")[0]
        store = FallbackStore(RedisStore(url, timeout_s=0.2), MemoryStore(), retry_s=0.3)
        store.put("forms", "seen", "before")
        proc.kill()
        proc.wait()
        with caplog.at_level(logging.WARNING, logger="thresher.api.stores"):
            assert store.get("forms", "seen") == "before"  # from the local copy
            store.put("forms", "during", "local only")
            assert store.get("forms", "during") == "local only"
            assert store.incr("limits", "c", 1, ttl_s=60) == 1
            for _ in range(20):
                store.get("forms", "seen")
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1 and store.degraded  # one warning, not one per call
        again = subprocess.Popen(
            ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            store.put("forms", "after", "shared again")
            assert RedisStore(url).get("forms", "after") == "shared again"
        finally:
            again.kill()
            again.wait()


def test_an_unreachable_redis_raises_store_unavailable():
    from tests.api.servers import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.1)
    with pytest.raises(StoreUnavailable, match="did not answer"):
        store.get("forms", "x")
