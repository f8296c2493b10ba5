"""The lean HTTP/1.1 client against a scripted loopback server: keep-alive, the ways an answer
can be framed, and the ways a backend can fail."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from thresher.core.http1 import ConnectionLost, Http1Pool

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request, head and body (the client always sends Content-Length with a body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


async def with_server(handler: Handler, test: Callable[[str, dict], Awaitable[None]]) -> None:
    """Run ``test(base_url, stats)`` against a server answering with ``handler``;
    ``handler(reader, writer, n)`` answers the n-th request of a connection, False to hang up."""
    stats = {"connections": 0, "requests": []}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        n = 0
        try:
            while True:
                try:
                    stats["requests"].append(await read_request(reader))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if not await handler(reader, writer, n):
                    return
                n += 1
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await test(f"http://127.0.0.1:{port}/v1", stats)
    finally:
        server.close()


def pool(url: str, timeout: float = 5.0) -> Http1Pool:
    return Http1Pool(url, headers={"Content-Type": "application/json"}, timeout=timeout)


def reply(raw: bytes, *, keep_open: bool = True) -> Handler:
    """A handler that answers every request with ``raw``, then keeps or closes the connection."""

    async def handler(_r, writer, _n) -> bool:
        writer.write(raw)
        await writer.drain()
        return keep_open

    return handler


answer_ok = reply(OK)


def test_requests_reuse_one_keep_alive_connection():
    async def test(url, stats):
        client = pool(url)
        for _ in range(3):
            assert await client.request("POST", "/chat/completions", b'{"a": 1}') == (
                200,
                b'{"ok": true}',
            )
        assert stats["connections"] == 1
        first = stats["requests"][0]
        assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"Host: 127.0.0.1:" in first and first.endswith(b'\r\n\r\n{"a": 1}')
        client.close()

    asyncio.run(with_server(answer_ok, test))


def test_concurrent_requests_each_get_their_own_answer():
    async def later(reader, writer, n) -> bool:
        await asyncio.sleep(0.05)  # all eight are in flight before the first answer
        return await answer_ok(reader, writer, n)

    async def test(url, stats):
        client = pool(url)
        answers = await asyncio.gather(*(client.request("GET", "/models", None) for _ in range(8)))
        assert all(status == 200 for status, _ in answers)
        assert stats["connections"] == 8  # in flight at once: one connection each
        await asyncio.gather(*(client.request("GET", "/models", None) for _ in range(8)))
        assert stats["connections"] == 8  # then all eight are reused
        client.close()

    asyncio.run(with_server(later, test))


def test_chunked_and_close_delimited_answers():
    async def chunked(_r, writer, n) -> bool:
        if n == 0:
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            await writer.drain()
            return True
        # No length and no chunks: the body runs until the server closes.
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()
        return False

    async def test(url, stats):
        client = pool(url)
        assert await client.request("GET", "/a", None) == (200, b"hello world")
        assert await client.request("GET", "/b", None) == (200, b"until the end")
        assert await client.request("GET", "/a", None) == (200, b"hello world")
        assert stats["connections"] == 2  # the closed connection was not reused
        client.close()

    asyncio.run(with_server(chunked, test))


def test_error_statuses_come_back_as_answers():
    fail = reply(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")

    async def test(url, _stats):
        client = pool(url)
        assert await client.request("POST", "/x", b"{}") == (503, b"busy")
        client.close()

    asyncio.run(with_server(fail, test))


def test_a_reused_connection_closed_before_any_answer_is_retried_on_a_fresh_one():
    async def first_only(reader, writer, n) -> bool:
        if n == 0:
            return await answer_ok(reader, writer, n)
        return False  # the next request finds the server closing its idle connection

    async def test(url, stats):
        client = pool(url)
        assert (await client.request("POST", "/x", b"{}"))[0] == 200
        assert (await client.request("POST", "/x", b"{}"))[0] == 200  # re-sent, no error
        assert stats["connections"] == 2 and len(stats["requests"]) == 3
        client.close()

    asyncio.run(with_server(first_only, test))


def test_a_hang_up_mid_answer_is_an_error_and_is_not_resent():
    cut = reply(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial', keep_open=False)

    async def test(url, stats):
        client = pool(url)
        with pytest.raises(ConnectionLost) as caught:
            await client.request("POST", "/x", b"{}")
        assert caught.value.received
        assert len(stats["requests"]) == 1
        client.close()

    asyncio.run(with_server(cut, test))


def test_a_slow_backend_times_out_and_its_connection_is_dropped():
    async def slow(_r, writer, _n) -> bool:
        await asyncio.sleep(1.0)
        writer.write(OK)
        return True

    async def test(url, stats):
        client = pool(url, timeout=0.2)
        with pytest.raises(TimeoutError):
            await client.request("POST", "/x", b"{}")
        assert client._idle == []

    asyncio.run(with_server(slow, test))


def test_malformed_answers_and_refused_connections_are_errors():
    garbage = reply(b"SMTP ready\r\n\r\n")

    async def test(url, _stats):
        with pytest.raises(ConnectionLost, match="malformed"):
            await pool(url).request("GET", "/x", None)

    asyncio.run(with_server(garbage, test))

    async def refused() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(OSError):
            await pool(f"http://127.0.0.1:{port}").request("GET", "/x", None)

    asyncio.run(refused())


def test_only_plain_http_urls():
    with pytest.raises(ValueError, match="http://"):
        Http1Pool("https://api.openai.com/v1", headers={}, timeout=1)
