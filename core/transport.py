"""How bytes reach an OpenAI-compatible server: the transport seam under
:class:`thresher.core.remote.OpenAICompatibleBackend` (as httpx puts a transport under its
``Client``).

A transport sends a request and hands back the raw answer (status, content type, body or body
lines); it knows nothing of OpenAI. It maps its library's failures onto :mod:`thresher.core.errors`
and says whether the request may have reached the server (``reached``), which is what the retry
policy (:mod:`thresher.core.retry`) needs to know to never send a generation twice.

::

    HttpxTransport   httpx.AsyncClient: any URL, JSON and streams (the default)
    Http1Transport   core.http1.Http1Pool for JSON to an ``http://`` server, httpx for streams;
                     the proxy's choice for a backend next door, where the client's CPU per
                     request is most of the proxy's overhead (bench/proxy.py)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from thresher.core.errors import BackendTimeoutError, BackendUnavailableError, ConfigError

TransportName = Literal["httpx", "http1", "auto"]
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer."""

    status: int
    content_type: str | None
    content: bytes


@dataclass(slots=True)
class StreamAnswer:
    """An answer read line by line (server-sent events)."""

    status: int
    content_type: str | None
    lines: AsyncIterator[bytes]
    read: Any  # async () -> bytes: the rest of the body (an error answer)


class Transport(Protocol):
    """Sends requests to one server. Raises only :mod:`thresher.core.errors` backend errors."""

    async def request(self, method: str, path: str, body: bytes | None) -> Answer: ...

    def stream(self, path: str, body: bytes) -> Any:
        """An async context manager yielding a :class:`StreamAnswer`."""
        ...

    async def aclose(self) -> None: ...


class HttpxTransport:
    """Requests over one pooled ``httpx.AsyncClient`` (made on first use: a client belongs to
    the event loop that uses it), at most ``max_connections`` open at once.

    Args:
        base_url: The server's base URL; request paths are appended.
        headers: Sent with every request.
        timeout: Seconds for each read (and for a free connection of the pool).
        max_connections: Connections open at once; more requests wait for one.
        client: A ready client to use instead (the caller closes it).
        name: Shown in error messages.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 120.0,
        max_connections: int = 100,
        client: Any = None,
        name: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = headers or {}
        self.timeout = timeout
        self.max_connections = max_connections
        self.name = name or self.base_url
        self._client = client
        self._owns_client = client is None

    def client(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=CONNECT_TIMEOUT),
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_connections,
                ),
            )
        return self._client

    async def request(self, method: str, path: str, body: bytes | None) -> Answer:
        headers = {**self.headers, "Content-Type": "application/json"} if body else self.headers
        try:
            response = await self.client().request(
                method, self.base_url + path, content=body, headers=headers
            )
        except Exception as exc:
            raise self._error(exc, path) from exc
        return Answer(response.status_code, response.headers.get("content-type"), response.content)

    @asynccontextmanager
    async def stream(self, path: str, body: bytes) -> AsyncIterator[StreamAnswer]:
        headers = {**self.headers, "Content-Type": "application/json"}
        try:
            async with self.client().stream(
                "POST", self.base_url + path, content=body, headers=headers
            ) as response:
                yield StreamAnswer(
                    response.status_code,
                    response.headers.get("content-type"),
                    _encoded(response.aiter_lines()),
                    response.aread,
                )
        except Exception as exc:
            error = self._error(exc, path)
            if error is exc:
                raise
            raise error from exc

    def _error(self, exc: Exception, path: str) -> Exception:
        import httpx

        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            return BackendTimeoutError(
                f"Backend {self.name} did not accept a connection in time for {path}.",
                reached=False,
            )
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeoutError(f"Backend {self.name} timed out on {path}.")
        if isinstance(exc, httpx.ConnectError):
            return BackendUnavailableError(
                f"Backend {self.name} is unreachable: {exc}.", reached=False
            )
        if isinstance(exc, httpx.TransportError):
            return BackendUnavailableError(f"Backend {self.name} broke off on {path}: {exc}.")
        return exc

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None


async def _encoded(lines: AsyncIterator[str]) -> AsyncIterator[bytes]:
    async for line in lines:
        yield line.encode()


class Http1Transport:
    """JSON requests through :class:`thresher.core.http1.Http1Pool` (one pre-rendered write, one
    httptools parse per answer); streams through an :class:`HttpxTransport`.

    Args: as :class:`HttpxTransport`; ``base_url`` must be ``http://``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 120.0,
        max_connections: int = 100,
        name: str | None = None,
    ) -> None:
        from thresher.core.errors import require

        http1 = require("thresher.core.http1", "api")  # httptools
        self.name = name or base_url
        fixed = {**(headers or {}), "Content-Type": "application/json"}
        self._pool = http1.Http1Pool(
            base_url, headers=fixed, timeout=timeout, max_idle=max_connections,
            max_connections=max_connections,
        )  # fmt: skip
        self._http1 = http1
        self._streams = HttpxTransport(
            base_url, headers=headers, timeout=timeout, max_connections=max_connections,
            name=self.name,
        )  # fmt: skip

    async def request(self, method: str, path: str, body: bytes | None) -> Answer:
        try:
            status, content = await self._pool.request(method, path, body)
        except self._http1.ConnectFailed as exc:
            raise BackendUnavailableError(
                f"Backend {self.name} is unreachable: {exc}.", reached=False
            ) from exc
        except TimeoutError as exc:
            raise BackendTimeoutError(f"Backend {self.name} timed out on {path}.") from exc
        except OSError as exc:  # ConnectionLost and the rest, after the request was written
            raise BackendUnavailableError(
                f"Backend {self.name} broke off on {path}: {exc}."
            ) from exc
        # The pool reads JSON answers only; their type is not parsed (it is not needed).
        return Answer(status, None, content)

    def stream(self, path: str, body: bytes) -> Any:
        return self._streams.stream(path, body)

    async def aclose(self) -> None:
        self._pool.close()
        await self._streams.aclose()


def make_transport(
    base_url: str,
    kind: TransportName = "httpx",
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
    max_connections: int = 100,
    client: Any = None,
    name: str | None = None,
) -> Transport:
    """The transport ``kind`` names; ``auto`` is the lean one for ``http://``, else httpx."""
    lean = kind == "http1" or (kind == "auto" and base_url.startswith("http://"))
    if lean and client is None:
        if not base_url.startswith("http://"):
            raise ConfigError(
                f"The http1 transport speaks plain http://, not {base_url!r}; use 'httpx' or "
                "'auto'.",
                field="backend_transport",
            )
        return Http1Transport(
            base_url, headers=headers, timeout=timeout, max_connections=max_connections,
            name=name,
        )  # fmt: skip
    return HttpxTransport(
        base_url, headers=headers, timeout=timeout, max_connections=max_connections,
        client=client, name=name,
    )  # fmt: skip
