"""Forwarding to a backend: retries with backoff where safe, SSE relay, errors in OpenAI shape.

A request is retried on connection failure, timeout or a 5xx, with exponential backoff, only
until the first byte of an answer has been relayed: once a stream has started, a retry would
repeat text the client already has, so a later failure ends the stream with an error event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from api.metrics import Metrics
from core.errors import (
    BackendError,
    BackendResponseError,
    BackendTimeoutError,
    BackendUnavailableError,
)

log = logging.getLogger(__name__)
Body = dict[str, Any]


def error_kind(exc: BackendError) -> str:
    if isinstance(exc, BackendTimeoutError):
        return "timeout"
    if isinstance(exc, BackendResponseError):
        return f"http_{exc.status_code}"
    return "unavailable"


def retryable(exc: BackendError) -> bool:
    if isinstance(exc, BackendResponseError):
        return exc.status_code >= 500
    return isinstance(exc, BackendTimeoutError | BackendUnavailableError)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first, waiting ``backoff * 2**n`` seconds between."""

    retries: int = 2
    backoff: float = 0.25

    async def call(
        self, backend: str, attempt: Callable[[], Awaitable[Body]], metrics: Metrics
    ) -> Body:
        """Run ``attempt`` until it answers, retrying what is safe to retry."""
        n = 0
        while True:
            try:
                return await attempt()
            except BackendError as exc:
                await self._after_failure(backend, exc, n, metrics)
            n += 1

    async def open_stream(
        self, backend: str, start: Callable[[], AsyncIterator[Body]], metrics: Metrics
    ) -> tuple[Body | None, AsyncIterator[Body]]:
        """Start a stream and read its first chunk, retrying until that chunk arrives."""
        n = 0
        while True:
            stream = start()
            try:
                return await anext(aiter(stream), None), stream
            except BackendError as exc:
                await self._after_failure(backend, exc, n, metrics)
            n += 1

    async def _after_failure(
        self, backend: str, exc: BackendError, n: int, metrics: Metrics
    ) -> None:
        """Count the failure; re-raise it if it is final, else wait before the next try."""
        metrics.backend_error(backend, error_kind(exc))
        if not retryable(exc) or n >= self.retries:
            raise exc
        log.warning("backend %s failed (%s); retry %d of %d", backend, exc, n + 1, self.retries)
        await asyncio.sleep(self.backoff * 2**n)


async def relay_sse(
    first: Body | None,
    rest: AsyncIterator[Body],
    *,
    backend: str,
    metrics: Metrics,
    extra: Body | None = None,
) -> AsyncIterator[bytes]:
    """Server-sent events in OpenAI's framing; ``extra`` rides on the first chunk."""
    try:
        if first is not None:
            if extra:
                first = {**first, **extra}
            yield _event(first)
        async for chunk in rest:
            yield _event(chunk)
    except BackendError as exc:
        # Headers are gone: the OpenAI clients raise on an error event inside the stream.
        metrics.backend_error(backend, error_kind(exc))
        error = {
            "error": {
                "message": f"{exc} The stream was cut short; do not retry blindly, part of "
                "the answer was already sent.",
                "type": "api_error",
                "param": None,
                "code": "backend_stream_broken",
            }
        }
        yield _event(error)
    finally:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()
    yield b"data: [DONE]\n\n"


def _event(data: Body) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
