"""The official ``openai`` client, sync and async, streaming and not, against the app under
uvicorn on loopback with the local backend."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.api.conftest import LOCAL

MESSAGES = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def client(live_local):
    return openai.OpenAI(base_url=f"{live_local}/v1", api_key="unused", max_retries=0)


def test_sync_chat_and_raw_headers(client):
    raw = client.chat.completions.with_raw_response.create(
        model=LOCAL, messages=MESSAGES, max_tokens=4, temperature=0
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens <= 4
    assert int(raw.headers["x-thresher-tokens-before"]) > 0
    assert completion.model_extra["thresher"]["saved_tokens"] == 0


def test_sync_stream_matches_the_whole_answer(client):
    whole = client.chat.completions.create(
        model=LOCAL, messages=MESSAGES, max_tokens=4, temperature=0
    )
    stream = client.chat.completions.create(
        model=LOCAL, messages=MESSAGES, max_tokens=4, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == whole.choices[0].message.content


def test_async_chat_and_stream(live_local):
    async def run() -> tuple[str, str]:
        async with openai.AsyncOpenAI(
            base_url=f"{live_local}/v1", api_key="unused", max_retries=0
        ) as aclient:
            whole = await aclient.chat.completions.create(
                model=LOCAL, messages=MESSAGES, max_tokens=4, temperature=0
            )
            stream = await aclient.chat.completions.create(
                model=LOCAL, messages=MESSAGES, max_tokens=4, temperature=0, stream=True
            )
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return whole.choices[0].message.content, "".join(parts)

    whole, streamed = asyncio.run(run())
    assert whole and streamed == whole


def test_completions_and_models(client):
    answer = client.completions.create(
        model=LOCAL, prompt="The sky is", max_tokens=4, temperature=0
    )
    assert answer.choices[0].text
    stream = client.completions.create(
        model=LOCAL, prompt="The sky is", max_tokens=4, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == answer.choices[0].text
    assert LOCAL in [m.id for m in client.models.list()]


def test_client_sees_openai_errors(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-nowhere", messages=MESSAGES)
    assert "not routable" in caught.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(
            model=LOCAL, messages=MESSAGES, extra_body={"thresher": {"budget_tokens": -1}}
        )
    assert caught.value.body["param"] == "thresher.budget_tokens"
