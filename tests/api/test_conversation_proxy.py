"""Conversation-aware compression through the proxy, against the loopback fault backend: its
``mirror`` model answers with the messages it was sent, so a test sees the forwarded bytes."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.api.conftest import make_app
from tests.api.servers import fault_backend, serve_app


@pytest.fixture(scope="module")
def backend():
    with fault_backend() as (url, _):
        yield url


@pytest.fixture(scope="module")
def proxy(provider, local_lm, scorer, backend):
    app = make_app(
        provider, local_lm, routes={"mirror": backend, "ok": backend},
        compress_min_tokens=50, compress_queue=0,
    )  # fmt: skip
    with serve_app(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        yield client, app.state.thresher, base


def send(client, messages, **compression):
    raw = client.chat.completions.with_raw_response.create(
        model="mirror", messages=messages, extra_body={"thresher": {"compression": compression}}
    )
    answer = raw.parse()
    return json.loads(answer.choices[0].message.content), raw.headers, answer


def test_a_conversation_keeps_its_forwarded_prefix_byte_identical(proxy, chunks):
    client, _, _ = proxy
    messages = [{"role": "system", "content": "Answer briefly. " * 10}]
    previous: list[dict] = []
    for t in range(10):
        messages.append({"role": "user", "content": f"{chunks[2 * t]}\nWhat happens {t}?"})
        sent, headers, _ = send(client, messages, rate=0.5, when="always")
        assert sent[: len(previous)] == previous  # the bytes the backend's cache holds
        assert sent[0] == messages[0] and sent[-1]["content"].endswith(f"\nWhat happens {t}?")
        stats = dict(kv.split("=") for kv in headers["x-thresher-compression"].split("; "))
        new = messages[-2:] if t else messages[-1:]
        assert int(stats["compressed"]) == len(new) and int(stats["cached"]) == 2 * t - len(new) + 1
        previous = sent
        messages.append({"role": "assistant", "content": chunks[2 * t + 1]})
    assert len(json.dumps(sent)) < 0.8 * len(json.dumps(messages[:-1]))


def test_options_that_cannot_hold_are_422_naming_the_field(proxy, chunks):
    client, _, _ = proxy
    messages = [{"role": "user", "content": chunks[0]}, {"role": "user", "content": "Why?"}]
    for keep, field in [
        ([0, 1], "thresher.compression.keep"),
        ([0, -1], "thresher.compression.keep"),
        ([5], "thresher.compression.keep[0]"),
    ]:
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            send(client, messages, rate=0.5, keep=keep)
        assert caught.value.body["param"] == field
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        send(client, messages, rate=0.5, when="sometimes")
    assert caught.value.body["param"] == "thresher.compression.when"
    sent, _, _ = send(client, messages, rate=0.5, keep=[0], when="always")
    assert sent == messages  # the kept message, and a short question
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.completions.create(
            model="mirror",
            prompt=chunks[0],
            extra_body={"thresher": {"compression": {"keep": [0]}}},
        )
    assert caught.value.body["param"] == "thresher.compression.keep"


def test_a_full_queue_forwards_uncompressed_at_once(proxy, chunks):
    client, state, _ = proxy
    messages = [{"role": "user", "content": chunks[30] + chunks[31]}]
    with state.compression.pool.slot(lambda: None):  # the one worker is busy; queue size 0
        sent, headers, _ = send(client, messages, rate=0.5, when="always")
    assert sent == messages
    assert "queue full" in headers["x-thresher-compression-decision"]
    assert "skipped=1" in headers["x-thresher-compression"]


def test_two_thousand_messages_answer_within_the_deadline(proxy, chunks):
    client, _, _ = proxy
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": chunks[i % 40][:450] + f" {i}"}
        for i in range(2000)
    ]
    sent, headers, answer = send(client, messages, rate=0.5, deadline_ms=2000, when="always")
    assert len(sent) == 2000
    decision = headers["x-thresher-compression-decision"]
    assert decision.startswith("partial: ") and ("deadline" in decision or "cap" in decision)
    stage = next(s for s in answer.model_extra["thresher"]["stages"] if s["name"] == "compression")
    assert stage["status"] == "ran"


def test_a_disconnected_client_stops_the_work(proxy, chunks, backend):
    _, state, base = proxy
    messages = [{"role": "user", "content": f"{c} ({i})"} for i, c in enumerate(chunks[:40])]
    body = {
        "model": "ok", "messages": messages,
        "thresher": {"compression": {
            "method": "llmlingua", "rate": 0.5, "when": "always", "deadline_ms": 60000,
        }},
    }  # fmt: skip
    counts = f"{backend.removesuffix('/v1')}/counts"
    before = httpx.get(counts).json().get("ok", 0)
    remembered = len(state.compression.cache)
    _give_up_after(f"{base}/v1/chat/completions", body)  # 40 messages: many seconds of work
    gone = time.monotonic()
    pool = state.compression.pool
    while pool.running and time.monotonic() < gone + 10:
        time.sleep(0.01)
    assert pool.running == 0  # the work stopped (bench/conversation.py times how fast)
    # Before it was done: each finished message leaves two entries (its rate's, any rate's).
    assert len(state.compression.cache) - remembered < 2 * len(messages)
    time.sleep(0.3)
    assert httpx.get(counts).json().get("ok", 0) == before  # and nothing was forwarded
    assert 'status="499"' in httpx.get(f"{base}/metrics").text  # counted as the client's close


def _give_up_after(url: str, body: dict) -> None:
    try:
        httpx.post(url, json=body, timeout=httpx.Timeout(10, read=1.5))
    except httpx.ReadTimeout:
        pass


def test_compression_is_skipped_when_it_does_not_pay(provider, local_lm, backend, chunks):
    app = make_app(provider, local_lm, routes={"mirror": backend}, compress_min_tokens=50)
    with serve_app(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        # Conversations of different sizes teach the proxy this backend's prefill speed
        # (the mirror answers at once: a prefill saving is worth next to nothing).
        for n in range(1, 7):
            messages = [{"role": "user", "content": " ".join(chunks[:n]) + "\nWhy?"}]
            send(client, messages, rate=0.5)
        fresh = [{"role": "user", "content": chunks[20] + chunks[21] + "\nWho?"}]
        sent, headers, _ = send(client, fresh, rate=0.5)
        assert "predicted saving" in headers["x-thresher-compression-decision"]
        assert "prefill_ms_per_token=" in headers["x-thresher-compression-estimate"]
        assert sent == fresh
        # What was forwarded whole stays whole on the next turn (the backend's cache holds it).
        again, headers, _ = send(client, fresh, rate=0.5, when="always")
        assert again == fresh and "cached=1" in headers["x-thresher-compression"]


def test_a_stream_is_compressed_and_relayed(proxy, chunks):
    client, _, _ = proxy
    messages = [{"role": "user", "content": chunks[33] + "\nWho?"}]
    stream = client.chat.completions.create(
        model="ok", messages=messages, stream=True,
        extra_body={"thresher": {"compression": {"rate": 0.5, "when": "always"}}},
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "w0 w1 w2 "


def test_a_token_target_holds_over_the_whole_conversation(proxy, chunks):
    client, _, _ = proxy
    messages = [
        {"role": "system", "content": "Be brief."},
        *({"role": "user", "content": chunks[40 + i]} for i in range(4)),
    ]
    _, headers, answer = send(client, messages, target_tokens=200, deadline_ms=120_000)
    report = answer.model_extra["thresher"]
    assert report["tokens_before"] > 300 and report["tokens_after"] <= 200
    assert "compress" in headers["x-thresher-compression-decision"]  # a target always runs
