import asyncio

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
