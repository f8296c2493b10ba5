"""The one retry policy of every backend call: a few more tries, with backoff, inside a total
deadline, and never a second copy of a generation that may have started.

What is retried: a request that never reached the backend (no connection, no free pooled
connection in time) and an HTTP answer that says the server did not run it (429, 502, 503,
504) or failed it (500). What is not: a timeout or a connection broken after the request was
sent (the backend may be generating: a resend would run it twice and bill it twice), a 4xx, an
answer in the wrong protocol. A stream is retried only until its first event: after that the
client has part of the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from thresher.core.errors import (
    BackendError,
    BackendProtocolError,
    BackendResponseError,
    BackendTimeoutError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
ErrorObserver = Callable[[str, BackendError], None]


def error_kind(exc: BackendError) -> str:
    """A short label for metrics: ``timeout``, ``http_503``, ``protocol``, ``unavailable``."""
    if isinstance(exc, BackendTimeoutError):
        return "timeout"
    if isinstance(exc, BackendResponseError):
        return f"http_{exc.status_code}"
    if isinstance(exc, BackendProtocolError):
        return "protocol"
    return "unavailable"


def retryable(exc: BackendError) -> bool:
    """Whether sending the request again cannot run it twice (see the module docstring)."""
    if isinstance(exc, BackendResponseError):
        return exc.status_code in RETRY_STATUSES
    if isinstance(exc, BackendProtocolError):
        return False
    return not exc.reached


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first, ``backoff * 2**n`` seconds apart, all of them
    within ``deadline`` seconds (None: no total limit beyond each attempt's own timeout).

    ``observe(backend_name, error)`` sees every failed attempt (the service counts them).
    ``attempt_timeout`` is what bounds one attempt already (the transport's timeout): while
    the deadline is further away than that, an attempt runs without a timer of its own."""

    retries: int = 2
    backoff: float = 0.25
    deadline: float | None = None
    observe: ErrorObserver | None = None
    attempt_timeout: float | None = None

    async def call(self, name: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it answers or fails for good."""
        end = self._end()
        n = 0
        while True:
            try:
                return await self._within(end, attempt(), name, n)
            except BackendError as exc:
                await self._after_failure(name, exc, n, end)
            n += 1

    async def open_stream(
        self, name: str, start: Callable[[], AsyncIterator[Any]]
    ) -> tuple[Any, AsyncIterator[Any]]:
        """Start a stream and read its first item, retrying until that item arrives; the
        item (None for an empty stream) and the rest of the stream."""
        end = self._end()
        n = 0
        while True:
            stream = start()
            try:
                return await self._within(end, anext(aiter(stream), None), name, n), stream
            except BackendError as exc:
                await _close(stream)
                await self._after_failure(name, exc, n, end)
            n += 1

    def _end(self) -> float | None:
        return None if self.deadline is None else time.monotonic() + self.deadline

    async def _after_failure(self, name: str, exc: BackendError, n: int, end: float | None) -> None:
        """Count the failure; re-raise it if it is final, else wait before the next try."""
        if self.observe is not None:
            self.observe(name, exc)
        wait = self.backoff * 2**n
        late = end is not None and time.monotonic() + wait >= end
        if not retryable(exc) or n >= self.retries or late:
            raise exc
        log.warning("backend %s failed (%s); retry %d of %d", name, exc, n + 1, self.retries)
        await asyncio.sleep(wait)

    async def _within(self, end: float | None, work: Awaitable[T], name: str, n: int) -> T:
        if end is None or (n == 0 and self._first_fits()):
            return await work  # the attempt's own timeout comes first: no timer to schedule
        return await _timed(end - time.monotonic(), work, name)

    def _first_fits(self) -> bool:
        """Whether one attempt's own timeout ends before the deadline does."""
        limit = self.attempt_timeout
        return limit is not None and self.deadline is not None and self.deadline >= limit


async def _timed(left: float, work: Awaitable[T], name: str) -> T:
    try:
        async with asyncio.timeout(left):
            return await work
    except TimeoutError:
        raise BackendTimeoutError(
            f"Backend {name} did not answer within the deadline; a retry would resend it."
        ) from None


async def _close(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # noqa: BLE001 - closing a failed stream must not hide its error
            log.debug("closing a failed stream raised", exc_info=True)
