"""The cheapest OpenAI-shaped backend we can write, to measure the proxy's own overhead: an
asyncio protocol on uvloop with httptools' parser and a fixed answer, no ASGI server. On these
2 cores the load generator, this backend and the proxy share the CPU, so every microsecond the
backend spends is taken from the proxy under test: about 10 us of CPU per request here, where
the same answer from an ASGI app under uvicorn took 45 us. ``--delay-ms`` waits before
answering, like a fast LLM server's short completion.

    python bench/fast_backend.py PORT [--delay-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httptools
import uvloop

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "fast",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }
).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "fast", "object": "model"}]}).encode()


def reply(body: bytes, keep_alive: bool) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


# Every answer pre-rendered, by (asked for /models, keep the connection alive).
REPLIES = {
    (models, keep): reply(MODELS if models else ANSWER, keep)
    for models in (True, False)
    for keep in (True, False)
}


class Backend(asyncio.Protocol):
    """One connection: answers each request once its body is in, in order (no pipelining)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.models = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.models = url.rstrip(b"/").endswith(b"/models")

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        answer = REPLIES[(self.models, keep_alive)]
        if self.delay and not self.models:
            asyncio.get_running_loop().call_later(self.delay, self._write, answer, keep_alive)
        else:
            self._write(answer, keep_alive)

    def _write(self, answer: bytes, keep_alive: bool) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self.transport.write(answer)
        if not keep_alive:
            self.transport.close()


async def serve(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Backend(delay), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.delay_ms / 1000))
