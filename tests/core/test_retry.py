"""The one retry policy, over both transports, against a real misbehaving server
(tests/api/fault_backend.py): what may have started is never sent twice, and a deadline bounds
every call with its retries."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.api.servers import fault_backend, free_port
from thresher.core.backends import make_backend
from thresher.core.errors import (
    BackendProtocolError,
    BackendResponseError,
    BackendTimeoutError,
    BackendUnavailableError,
)
from thresher.core.retry import retryable

MESSAGES = [{"role": "user", "content": "hi"}]
TRANSPORTS = ["httpx", "http1"]


@pytest.fixture(scope="module")
def server():
    with fault_backend() as (url, _):
        yield url


def sent(server: str, model: str) -> int:
    return int(httpx.get(server.removesuffix("/v1") + "/counts").json().get(model, 0))


def chat(backend, model: str, stream: bool = False):
    async def go():
        try:
            if stream:
                return [
                    c async for c in backend.stream_chat({"model": model, "messages": MESSAGES})
                ]
            return await backend.chat({"model": model, "messages": MESSAGES})
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_what_is_retried():
    assert retryable(BackendUnavailableError("refused", reached=False))
    assert retryable(BackendTimeoutError("no connection in time", reached=False))
    assert not retryable(BackendTimeoutError("read timeout"))  # it may be generating
    assert not retryable(BackendUnavailableError("broke off after the request was sent"))
    assert not retryable(BackendProtocolError("not JSON"))
    for status, expected in [(500, True), (503, True), (429, True), (400, False), (404, False)]:
        assert retryable(BackendResponseError("x", status_code=status)) is expected


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_timed_out_generation_is_sent_once(server, transport):
    before = sent(server, "slow")
    backend = make_backend(server, timeout=0.5, retries=3, backoff=0.01, transport=transport)
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError):
        chat(backend, "slow")
    assert time.monotonic() - start < 3  # one 0.5 s timeout, not four
    assert sent(server, "slow") - before == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_error_answer_is_retried_within_the_deadline(server, transport):
    before = sent(server, "flaky-9")
    backend = make_backend(
        server, timeout=5, retries=10, backoff=0.2, deadline=0.5, transport=transport
    )
    start = time.monotonic()
    with pytest.raises(BackendResponseError):
        chat(backend, "flaky-9")
    assert time.monotonic() - start < 1.0  # 0.2 + 0.4 would pass the 0.5 s deadline
    assert sent(server, "flaky-9") - before == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_refused_connection_is_retried_and_observed(transport):
    seen = []
    backend = make_backend(
        f"http://127.0.0.1:{free_port()}/v1", retries=2, backoff=0.01, transport=transport,
        on_error=lambda name, exc: seen.append(exc),
    )  # fmt: skip
    with pytest.raises(BackendUnavailableError):
        chat(backend, "ok")
    assert len(seen) == 3 and not any(e.reached for e in seen)


def test_a_stream_answered_without_events_is_not_retried(server):
    before = sent(server, "not-sse")
    with pytest.raises(BackendProtocolError, match="text/event-stream"):
        chat(make_backend(server, retries=3, backoff=0.01), "not-sse", stream=True)
    assert sent(server, "not-sse") - before == 1


def test_a_stream_relays_every_event(server):
    chunks = chat(make_backend(server), "ok", stream=True)
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["w0 ", "w1 ", "w2 "]


def test_connections_per_backend_are_bounded(server):
    async def go():
        backend = make_backend(server, max_connections=2, transport="http1")
        body = {"model": "ok", "messages": MESSAGES}
        try:
            answers = await asyncio.gather(*(backend.chat(body) for _ in range(12)))
        finally:
            await backend.aclose()
        return answers, backend.transport._pool  # type: ignore[attr-defined]

    answers, pool = asyncio.run(go())
    assert len(answers) == 12 and len(pool._idle) <= 2
