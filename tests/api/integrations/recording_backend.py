"""An OpenAI-shaped backend that keeps every chat body it receives, so a test can check what a
proxy in front of it (Thresher's, LiteLLM's) actually forwarded. ``GET /received`` lists them."""

from __future__ import annotations

import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def recording_app() -> Starlette:
    received: list[dict[str, Any]] = []

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        received.append(body)
        return JSONResponse(
            {
                "id": f"chatcmpl-rec-{len(received)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "recorded"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "recorded", "object": "model"}]})

    async def listing(_: Request) -> JSONResponse:
        return JSONResponse(received)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
            Route("/received", listing),
        ]
    )
    app.state.received = received
    return app
