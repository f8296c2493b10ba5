"""An OpenAI-shaped backend that misbehaves on purpose, chosen by the request's model name.

``ok`` answers at once; ``fail-500`` always answers HTTP 500; ``flaky-N`` answers 503 to the
first N requests and then succeeds; ``slow`` waits 30 s; ``drip`` streams one chunk every 0.2 s
(the test kills this process mid-stream); ``not-sse`` answers a stream request with plain JSON;
``echo`` answers with the body it received; ``mirror`` with the messages it was sent.
Run: ``python fault_backend.py PORT``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

seen: Counter[str] = Counter()


def completion(model: str, text: str) -> dict:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chunk(model: str, text: str) -> bytes:
    data = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return f"data: {json.dumps(data)}\n\n".encode()


async def chat(request: Request):
    body = await request.json()
    model = body.get("model", "")
    seen[model] += 1
    if model == "fail-500":
        return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, 500)
    if model.startswith("flaky-") and seen[model] <= int(model.split("-")[1]):
        return JSONResponse({"error": {"message": "busy", "type": "server_error"}}, 503)
    if model == "slow":
        await asyncio.sleep(30)
    if model == "echo":
        return JSONResponse({**completion(model, "echo"), "received": body})
    if model == "not-sse":
        return JSONResponse(completion(model, "a plain answer to a stream request"))
    if body.get("stream"):

        async def events():
            n = 50 if model == "drip" else 3
            for i in range(n):
                yield chunk(model, f"w{i} ")
                if model == "drip":
                    await asyncio.sleep(0.2)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
    if model == "mirror":  # answers with the messages it was sent, and their word count
        answer = completion(model, json.dumps(body.get("messages", [])))
        words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        usage = {"prompt_tokens": words, "completion_tokens": 2}
        answer["usage"] = {**usage, "total_tokens": words + 2}
        return JSONResponse(answer)
    return JSONResponse(completion(model, f"echo {len(body.get('messages', []))} messages"))


async def models(_: Request):
    return JSONResponse({"object": "list", "data": [{"id": "ok", "object": "model"}]})


async def counts(_: Request):
    return JSONResponse(dict(seen))


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
        Route("/counts", counts),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
