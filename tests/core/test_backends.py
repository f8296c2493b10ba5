import asyncio
import time

import pytest

from thresher.core.backends import ChatBackend, LocalBackend, OpenAICompatibleBackend
from thresher.core.errors import BackendUnavailableError, InputError


@pytest.fixture(scope="module")
def local_backend(local_lm):
    return LocalBackend(local_lm, max_new_tokens=16)


def test_backends_follow_the_protocol(local_backend):
    assert isinstance(local_backend, ChatBackend)
    assert isinstance(OpenAICompatibleBackend("http://127.0.0.1:9/v1"), ChatBackend)


def test_local_backend_generates_a_chat_answer(local_backend):
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "max_tokens": 8,
        "temperature": 0,
    }
    answer = asyncio.run(local_backend.chat(body))
    choice = answer["choices"][0]
    assert answer["object"] == "chat.completion"
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert 0 < answer["usage"]["completion_tokens"] <= 8
    again = asyncio.run(local_backend.chat(body))
    assert again["choices"][0]["message"]["content"] == choice["message"]["content"]


def test_local_backend_streams_the_same_text(local_backend):
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 8,
        "temperature": 0,
    }

    async def collect():
        return [c async for c in local_backend.stream_chat(body)]

    chunks = asyncio.run(collect())
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    whole = asyncio.run(local_backend.chat(body))["choices"][0]["message"]["content"]
    assert streamed == whole
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}


def test_local_backend_completion_and_bad_input(local_backend):
    answer = asyncio.run(
        local_backend.complete({"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0})
    )
    assert answer["choices"][0]["text"]
    with pytest.raises(InputError, match="prompt"):
        asyncio.run(local_backend.complete({"prompt": ""}))
    with pytest.raises(InputError, match="max_tokens"):
        asyncio.run(
            local_backend.chat({"messages": [{"role": "user", "content": "a"}], "max_tokens": -3})
        )


def test_unreachable_openai_backend_is_a_clear_error():
    backend = OpenAICompatibleBackend("http://127.0.0.1:9/v1", timeout=2)
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        asyncio.run(backend.chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))


def test_near_zero_temperature_decodes_greedily(local_backend):
    # 1e-166 is positive, but dividing float32 logits by it overflows; it must behave as 0.
    body = {"prompt": "The capital of France is", "max_tokens": 4}
    greedy = asyncio.run(local_backend.complete({**body, "temperature": 0}))
    tiny = asyncio.run(local_backend.complete({**body, "temperature": 1e-166}))
    assert tiny["choices"][0]["text"] == greedy["choices"][0]["text"]


def test_max_tokens_beyond_the_context_is_refused(local_backend):
    with pytest.raises(InputError, match="max_tokens is 2147483648"):
        asyncio.run(local_backend.complete({"prompt": "Hi", "max_tokens": 2**31}))


def test_local_stream_ends_with_usage_when_asked(local_backend):
    # OpenAI's stream_options.include_usage: a last chunk with no choices and the usage; the
    # local backend used to drop the option, so the official client never saw a usage.
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 4,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }

    async def collect(stream):
        return [c async for c in stream]

    chunks = asyncio.run(collect(local_backend.stream_chat(body)))
    assert chunks[-1]["choices"] == [] and chunks[-1]["object"] == "chat.completion.chunk"
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 4
    assert all("usage" not in c for c in chunks[:-1])
    plain = asyncio.run(collect(local_backend.stream_chat({**body, "stream_options": None})))
    assert all("usage" not in c for c in plain)
    completion = {"model": "x", "prompt": "The sky is", "max_tokens": 3, "temperature": 0}
    asked = {**completion, "stream_options": {"include_usage": True}}
    last = asyncio.run(collect(local_backend.stream_complete(asked)))[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] <= 3


def test_a_cancelled_local_generation_frees_the_model_at_once(local_backend):
    # A caller that stops waiting (the proxy, when its client disconnects) used to leave the
    # generation running to max_tokens, holding the lock every other request waits on.
    chat = {
        "model": "x",
        "messages": [{"role": "user", "content": "Count from 1 to 5000, one number per line."}],
        "max_tokens": 3000,
        "temperature": 0,
    }
    completion = {"model": "x", "prompt": "1, 2, 3, 4,", "max_tokens": 3000, "temperature": 0}

    async def abandon(call):
        task = asyncio.ensure_future(call)
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    for call in (local_backend.chat(chat), local_backend.complete(completion)):
        started = time.monotonic()
        asyncio.run(abandon(call))  # returns once the worker thread has returned
        assert time.monotonic() - started < 10  # within a token, not after 3,000
        assert local_backend._lock.acquire(timeout=1)
        local_backend._lock.release()
