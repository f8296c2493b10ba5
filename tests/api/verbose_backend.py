"""An OpenAI-shaped backend whose answers grow when its prompt has been cut hard, as a model
that hedges and restates when it reads telegraphic text.

How cut a prompt is shows in its function words: English prose is about two fifths "the",
"of", "and", "to", ...; token compressors drop those first. Below ``FLUENT`` of the words, the
answer grows by ``GROWTH`` words per point of function-word share lost. The answer's first
sentence is the same either way, so a mildly cut prompt gets the very same answer. Usage
counts words, and llama.cpp-style ``timings`` report 0.5 ms per prompt word and 20 ms per
answer word (nothing sleeps: the proxy learns the times from the timings).

Run: ``python verbose_backend.py PORT``.
"""

from __future__ import annotations

import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

FUNCTION_WORDS = frozenset(
    "a an the of and or but to in on at by for with from as is was were be been are it its "
    "he she they his her their him them this that these those which who whom what there "
    "had has have do did not no so than then if into out up about over after before".split()
)
FLUENT = 0.33
GROWTH = 6.0  # extra answer words per point (0.01) of function-word share lost
ANSWER = "The answer is in the second paragraph."
HEDGE = "I am not certain I read the question correctly, so here is more context:"


def function_share(text: str) -> float:
    words = [w.strip(".,;:!?\"'()").lower() for w in text.split()]
    words = [w for w in words if w]
    return sum(w in FUNCTION_WORDS for w in words) / max(len(words), 1)


def reply_text(prompt: str) -> str:
    lost = max(0.0, FLUENT - function_share(prompt)) * 100
    extra = round(lost * GROWTH)
    if extra == 0:
        return ANSWER
    filler = " ".join(f"point{i}" for i in range(extra))
    return f"{ANSWER} {HEDGE} {filler}"


async def chat(request: Request) -> JSONResponse:
    body = await request.json()
    messages = body.get("messages", [])
    prompt = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    text = reply_text(prompt)
    prompt_n = sum(len(str(m.get("content", "")).split()) for m in messages)
    out_n = len(text.split())
    return JSONResponse({
        "id": "chatcmpl-verbose", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_n, "completion_tokens": out_n,
                  "total_tokens": prompt_n + out_n},
        "timings": {"prompt_n": prompt_n, "prompt_ms": 0.5 * prompt_n,
                    "predicted_n": out_n, "predicted_ms": 20.0 * out_n},
    })  # fmt: skip


async def models(_: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [{"id": "verbose", "object": "model"}]})


app = Starlette(
    routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
