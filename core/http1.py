"""A lean HTTP/1.1 client for the proxy's hot path: JSON requests to a plain-HTTP backend over
pooled keep-alive connections, parsed by httptools (the parser uvicorn serves with).

A general client (aiohttp, httpx) spends most of its time per request on what a proxy talking
to one known backend does not need: cookie jars, redirects, proxies from the environment,
header objects, tracing hooks. Here a request is one pre-rendered header block and one write,
and the answer one parser feed (``bench/proxy.py`` measures what that saves per request).
TLS backends (OpenAI itself) and streams go through httpx: the network dwarfs the client there.
Used as a transport of :mod:`thresher.core.transport`, which maps its errors.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httptools


class ConnectionLost(ConnectionError):
    """The backend closed the connection before the answer was complete."""

    def __init__(self, message: str, *, received: bool) -> None:
        super().__init__(message)
        self.received = received  # False: nothing came back, the request may not have arrived


class ConnectFailed(ConnectionError):
    """No connection could be opened: the request never left (safe to send again)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; answers one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._received = False
        self._headers_done = False
        self._delimited = False  # the body has a length or chunks (else it ends at close)
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self._answer
        if answer is None or answer.done():
            return
        if self._headers_done and not self._delimited:  # the body ran until the close
            answer.set_result((self._parser.get_status_code(), b"".join(self._body)))
            return
        reason = f" ({exc})" if exc else ""
        answer.set_exception(
            ConnectionLost(f"connection closed mid-answer{reason}", received=self._received)
        )

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionLost(f"malformed HTTP answer: {exc}", received=True))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._delimited = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((self._parser.get_status_code(), b"".join(self._body)))

    # the client side
    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._body, self._received, self._headers_done, self._delimited = [], False, False, False
        self.transport.write(request)
        return self._answer

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive connections to one ``http://`` origin.

    Args:
        base_url: ``http://host[:port][/prefix]``; request paths are appended to the prefix.
        headers: Sent with every request (rendered once).
        timeout: Seconds from sending a request to its whole answer.
        connect_timeout: Seconds to open a connection.
        max_idle: Idle connections kept for reuse (at least the expected concurrency).
        max_connections: Connections open at once; more requests wait for one (bounded).
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str],
        timeout: float,
        connect_timeout: float = 10.0,
        max_idle: int = 256,
        max_connections: int | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"Http1Pool serves http:// URLs, not {base_url!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/").encode()
        host = url.netloc.rpartition("@")[2]
        fixed = {"Host": host, "User-Agent": "thresher", **headers}
        self._headers = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in fixed.items())
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.max_connections = max_connections or max_idle
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(self.max_connections)

    async def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        """Send one request; its status and whole body. Raises ``TimeoutError``, ``OSError``
        (``ConnectFailed`` when no connection opens, ``ConnectionLost`` when the backend hangs
        up mid-answer)."""
        head = b"%s %s%s HTTP/1.1\r\n" % (method.encode(), self.prefix, path.encode())
        request = head + self._headers
        if body is not None:
            request += b"Content-Length: %d\r\n\r\n" % len(body) + body
        else:
            request += b"\r\n"
        async with self._slots:
            conn, reused = await self._acquire()
            try:
                status, content = await self._exchange(conn, request)
            except ConnectionLost as exc:
                if not (reused and not exc.received):
                    raise
                # An idle connection the backend closed as we sent: nothing was answered, so
                # the request goes once more on a fresh connection (what browsers do).
                conn, _ = await self._acquire(fresh=True)
                status, content = await self._exchange(conn, request)
            self._release(conn)
        return status, content

    async def _exchange(self, conn: _Connection, request: bytes) -> tuple[int, bytes]:
        answer = conn.send(request)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.timeout, _expire, answer)
        try:
            return await answer
        except BaseException:
            conn.close()  # timed out, cancelled or broken: the connection's state is unknown
            raise
        finally:
            timer.cancel()

    async def _acquire(self, fresh: bool = False) -> tuple[_Connection, bool]:
        while self._idle and not fresh:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"cannot connect: {exc or type(exc).__name__}") from exc
        return conn, False

    def _release(self, conn: _Connection) -> None:
        if conn.closed or not conn.keep_alive or len(self._idle) >= self.max_idle:
            conn.close()
        else:
            self._idle.append(conn)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _expire(answer: asyncio.Future[tuple[int, bytes]]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError("no complete answer in time"))
