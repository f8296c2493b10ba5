"""The fastest OpenAI-shaped backend we can write (raw ASGI on uvloop + httptools, fixed answer),
to measure the proxy's own overhead. ``--delay-ms`` waits before answering, like a fast LLM
server's short completion. Run: ``python bench/fast_backend.py PORT [--delay-ms 50]``."""

from __future__ import annotations

import argparse
import asyncio
import json

import uvicorn

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
HEADERS = [(b"content-type", b"application/json")]


def make_app(delay: float):  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        models = scope["path"].endswith("/models")
        if delay and not models:
            await asyncio.sleep(delay)
        body = MODELS if models else ANSWER
        headers = [*HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.delay_ms / 1000), host="127.0.0.1", port=args.port, log_level="warning",
        access_log=False, loop="uvloop", http="httptools", backlog=4096,
    )  # fmt: skip
