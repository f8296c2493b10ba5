"""An OpenAI-shaped backend that reads its context and calls tools, deterministically.

It answers the last user message's question by looking for the question's longest number
(the needle) in every other message it was sent. Found: it answers with the text around the
needle. Not found while the request offers ``thresher_expand`` and the messages hold an
elision marker it has not expanded yet: it calls ``thresher_expand`` on that marker's handle
(as a model would, needing what was left out). No needle: it says it cannot tell. A question
about the weather, when the request offers a ``get_weather`` tool, calls that tool too, in the
same turn. Model ``no-tools`` answers 400 to a request with tools. Streams like OpenAI: content in
pieces, a tool call's name first and its arguments in two deltas, then the finish reason, and
a usage chunk when ``stream_options.include_usage`` asks for one. ``GET /requests`` returns
the bodies it received. Run: ``python tool_backend.py PORT``.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

HANDLE = re.compile(r"\[(thr:[0-9a-f]{8})\]")
NUMBER = re.compile(r"\d{3,}")
received: list[dict] = []


def text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def decide(body: dict) -> tuple[str, list[dict]]:
    """(content, tool calls) of the answer."""
    messages = body.get("messages", [])
    users = [text_of(m) for m in messages if m.get("role") == "user"]
    question = users[-1] if users else ""
    tools = {t.get("function", {}).get("name") for t in body.get("tools") or []}
    called = {
        c.get("function", {}).get("name") for m in messages for c in m.get("tool_calls") or []
    }
    calls = []
    if "get_weather" in tools and "weather" in question and "get_weather" not in called:
        calls.append(call("get_weather", {"city": "Porto"}))
    numbers = sorted(NUMBER.findall(question), key=len)
    needle = numbers[-1] if numbers else None
    everything = "\n".join(text_of(m) for m in messages)
    if needle is not None:
        for m in messages:
            if m.get("role") == "user" and text_of(m) == question:
                continue
            text = text_of(m)
            at = text.find(needle)
            if at >= 0:
                return f"Found: {text[max(0, at - 20) : at + 120]}", calls
    if needle is not None and "thresher_expand" in tools:
        asked = set()
        for m in messages:
            for c in m.get("tool_calls") or []:
                if c.get("function", {}).get("name") == "thresher_expand":
                    asked.add(json.loads(c["function"]["arguments"])["handle"])
        waiting = [h for h in HANDLE.findall(everything) if h not in asked]
        if waiting:
            calls.append(call("thresher_expand", {"handle": waiting[0]}))
    if calls:
        return "", calls
    return "I could not find it.", calls


def call(name: str, args: dict) -> dict:
    return {
        "id": f"call_{uuid.uuid4().hex[:12]}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


def usage(body: dict) -> dict:
    words = sum(len(text_of(m).split()) for m in body.get("messages", []))
    return {"prompt_tokens": words, "completion_tokens": 5, "total_tokens": words + 5}


async def chat(request: Request):
    body = await request.json()
    received.append(body)
    if body["model"] == "no-tools" and body.get("tools"):  # a server that takes no tools
        return JSONResponse({"error": {"message": "tools are not supported"}}, 400)
    content, calls = decide(body)
    ident, created, model = f"chatcmpl-{uuid.uuid4().hex[:10]}", int(time.time()), body["model"]
    finish = "tool_calls" if calls else "stop"
    if not body.get("stream"):
        message = {"role": "assistant", "content": content or None}
        if calls:
            message["tool_calls"] = calls
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage(body),
            }
        )

    def event(choices: list, **extra) -> bytes:
        data = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(data)}\n\n".encode()

    async def events():
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
        for i in range(0, len(content), 12):
            yield event([{"index": 0, "delta": {"content": content[i : i + 12]}}])
        for index, c in enumerate(calls):
            args = c["function"]["arguments"]
            first = {
                "index": index,
                "id": c["id"],
                "type": "function",
                "function": {"name": c["function"]["name"], "arguments": ""},
            }
            yield event([{"index": 0, "delta": {"tool_calls": [first]}}])
            for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
                delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                yield event([{"index": 0, "delta": delta}])
        yield event([{"index": 0, "delta": {}, "finish_reason": finish}])
        if (body.get("stream_options") or {}).get("include_usage"):
            yield event([], usage=usage(body))
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def models(_: Request):
    return JSONResponse({"object": "list", "data": [{"id": "tools", "object": "model"}]})


async def requests(_: Request):
    return JSONResponse(received)


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
        Route("/requests", requests),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
