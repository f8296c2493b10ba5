"""An OpenAI-shaped backend whose answers grow when its prompt has been cut hard, as a model
that hedges, restates and asks when the facts it needs are gone.

The client states how long its prompt was: a line ``[words=N]`` in the user's last message (a
question line, which compression keeps verbatim). The backend counts the words it received
(the marker aside): below ``ENOUGH`` of the stated words, the answer grows by ``GROWTH`` words
per point of share lost. The answer's first sentence is the same either way, so a mildly cut
prompt gets the very same answer. Usage counts words, and llama.cpp-style ``timings`` report
0.5 ms per prompt word and 20 ms per answer word (nothing sleeps: the proxy learns the times
from the timings).

The model ``judge`` compares two answers as the audit's judge route asks it to.

Run: ``python verbose_backend.py PORT``.
"""

from __future__ import annotations

import json
import re
import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

MARKER = re.compile(r"\[words=(\d+)\]")
ENOUGH = 0.6
GROWTH = 3.0  # extra answer words per point (0.01) of the prompt's share lost
ANSWER = "The answer is in the second paragraph."
HEDGE = "I am not certain I read the question correctly, so here is more context:"


def kept_share(prompt: str) -> float:
    """Words received over the words the client says it sent (1.0 without a marker)."""
    found = MARKER.search(prompt)
    if found is None:
        return 1.0
    received = len(MARKER.sub(" ", prompt).split())
    return received / max(int(found.group(1)), 1)


def reply_text(prompt: str) -> str:
    extra = round(max(0.0, ENOUGH - kept_share(prompt)) * 100 * GROWTH)
    if extra == 0:
        return ANSWER
    filler = " ".join(f"point{i}" for i in range(extra))
    return f"{ANSWER} {HEDGE} {filler}"


def judge(prompt: str) -> str:
    """As the model ``judge``: SAME when answers A and B are equally long (a judge that reads
    hedging as a different answer), else DIFFERENT."""
    a, _, b = prompt.partition("\n\nAnswer B:\n")
    return "SAME" if len(a.removeprefix("Answer A:\n").split()) == len(b.split()) else "DIFFERENT"


async def chat(request: Request) -> JSONResponse:
    body = await request.json()
    messages = body.get("messages", [])
    prompt = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    text = judge(prompt) if body.get("model") == "judge" else reply_text(prompt)
    prompt_n = sum(len(str(m.get("content", "")).split()) for m in messages)
    out_n = len(text.split())
    usage = {"prompt_tokens": prompt_n, "completion_tokens": out_n,
             "total_tokens": prompt_n + out_n}  # fmt: skip
    if body.get("stream"):  # the answer in pieces of 8 words, then a chunk with the usage
        words = text.split(" ")
        pieces = [" ".join(words[i : i + 8]) + " " for i in range(0, len(words), 8)]
        pieces[-1] = pieces[-1].rstrip()

        async def events():
            for piece in pieces:
                delta = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                yield f"data: {json.dumps(delta)}\n\n"
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
    return JSONResponse({
        "id": "chatcmpl-verbose", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": usage,
        "timings": {"prompt_n": prompt_n, "prompt_ms": 0.5 * prompt_n,
                    "predicted_n": out_n, "predicted_ms": 20.0 * out_n},
    })  # fmt: skip


async def complete(request: Request) -> JSONResponse:
    """``/v1/completions``: the same answer to the prompt as a text completion."""
    body = await request.json()
    prompt = str(body.get("prompt", ""))
    text = reply_text(prompt)
    prompt_n, out_n = len(prompt.split()), len(text.split())
    return JSONResponse({
        "id": "cmpl-verbose", "object": "text_completion", "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_n, "completion_tokens": out_n,
                  "total_tokens": prompt_n + out_n},
    })  # fmt: skip


async def models(_: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [{"id": "verbose", "object": "model"}]})


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", complete, methods=["POST"]),
        Route("/v1/models", models),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
