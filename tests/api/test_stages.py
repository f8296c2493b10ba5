"""The real stages behind the proxy: demonstrations from a prompting pool, one shared token
budget, compression with the scoring LM; skipped when they do not pay, failing open when they
break. The backend is the loopback echo server, which answers with how many messages it got."""

from __future__ import annotations

import json

import openai
import pytest

from tests.api.conftest import local_state, make_app
from tests.api.servers import fault_backend, serve_app
from thresher.api.app import create_app
from thresher.api.settings import ServiceSettings

STORY = json.loads((__import__("pathlib").Path(__file__).parents[1] / "data" / "api" /
                    "longqa_small.jsonl").read_text().splitlines()[0])  # fmt: skip
# About 300 tokens: long enough to compress, short enough for 2 cores.
CONTEXT = STORY["context"][:1400]
LONG = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": CONTEXT},
    {"role": "user", "content": STORY["question"]},
]


@pytest.fixture(scope="module")
def echo_url():
    with fault_backend() as (url, _):
        yield url


@pytest.fixture(scope="module")
def proxy(provider, local_lm, scorer, embedder, echo_url, data_dir):
    from thresher.prompting import PoolStore, read_demonstrations

    app = make_app(provider, local_lm, routes={"ok": echo_url}, compress_min_tokens=100)
    with serve_app(app) as base:
        state = app.state.thresher
        store = PoolStore(state.settings.data_dir, embedder)
        rows = read_demonstrations(
            data_dir / "api" / "intent_pool_small.jsonl", label_field="label"
        )
        store.create("intents", rows, replace=True)
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0), state


def ask(client, messages, **thresher):
    raw = client.chat.completions.with_raw_response.create(
        model="ok", messages=messages, extra_body={"thresher": thresher}
    )
    return raw.parse(), raw.headers


def stage(report, name):
    return next(s for s in report["stages"] if s["name"] == name)


def test_compression_saves_tokens_and_keeps_the_roles(proxy):
    client, state = proxy
    cache = state.counters[state.router.resolve("ok").tokenizer]
    before = len(cache._memo)
    answer, headers = ask(client, LONG, compression={"method": "llmlingua", "rate": 0.5})
    report = answer.model_extra["thresher"]
    assert stage(report, "compression")["status"] == "ran"
    assert 0 < report["tokens_after"] < 0.75 * report["tokens_before"]
    assert int(headers["x-thresher-saved-tokens"]) == report["saved_tokens"] > 0
    assert answer.choices[0].message.content == "echo 3 messages"  # roles and turns kept
    # The prompt counter's cache keeps message texts (sent and compressed), not the texts the
    # compressor's search counted once each.
    assert len(cache._memo) - before <= 2 * len(LONG)


def test_short_prompts_and_slow_predictions_skip_compression(proxy):
    client, state = proxy
    short = [{"role": "user", "content": "What is the capital of France?"}]
    report = ask(client, short, compression={"rate": 0.5})[0].model_extra["thresher"]
    assert stage(report, "compression")["status"] == "skipped"
    assert "compress_min_tokens" in stage(report, "compression")["detail"]
    assert report["tokens_after"] == report["tokens_before"]
    # After a real run the latency model predicts the cost; a tiny budget skips the new
    # messages (messages seen before cost nothing: their forms are remembered).
    ask(client, LONG, compression={"method": "llmlingua", "rate": 0.5})
    assert state.compression.latency.predict_ms("llmlingua", 300) > 0
    opts = {"method": "llmlingua", "rate": 0.5, "max_latency_ms": 0.01}
    fresh = [LONG[0], {"role": "user", "content": STORY["context"][1400:2800]}, LONG[2]]
    answer, headers = ask(client, fresh, compression=opts)
    report = answer.model_extra["thresher"]
    assert "latency budget" in stage(report, "compression")["detail"]
    assert headers["x-thresher-compression-decision"].startswith("skip new messages")
    assert report["tokens_after"] == report["tokens_before"]


def test_demonstrations_are_spliced_before_the_question(proxy):
    client, _ = proxy
    query = [{"role": "user", "content": "Play some jazz by Miles Davis."}]
    answer, _ = ask(client, query, demonstrations={"pool": "intents", "k": 3})
    report = answer.model_extra["thresher"]
    assert stage(report, "demonstrations")["status"] == "ran"
    assert answer.choices[0].message.content == "echo 7 messages"  # 3 pairs + the question
    assert report["tokens_after"] > report["tokens_before"]


def test_one_budget_drops_demonstrations_then_compresses(proxy):
    client, _ = proxy
    query = [{"role": "user", "content": "Book a table for two in Rome tonight."}]
    wide = ask(client, query, demonstrations={"pool": "intents", "k": 8})[0]
    tight = ask(client, query, demonstrations={"pool": "intents", "k": 8}, budget_tokens=80)[0]
    kept = int(tight.choices[0].message.content.split()[1])
    assert kept < int(wide.choices[0].message.content.split()[1])
    assert tight.model_extra["thresher"]["tokens_after"] <= 80
    squeezed = ask(client, LONG, budget_tokens=150, compression={"method": "llmlingua"})[0]
    assert squeezed.model_extra["thresher"]["tokens_after"] <= 150


def test_caller_mistakes_are_4xx(proxy):
    client, _ = proxy
    with pytest.raises(openai.NotFoundError) as caught:
        ask(client, LONG, demonstrations={"pool": "nope"})
    assert caught.value.body["param"] == "thresher.demonstrations.pool"
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        ask(client, LONG, compression={"method": "zip"})
    assert caught.value.body["param"] == "thresher.compression.method"


def test_a_broken_stage_fails_open(provider, local_lm, echo_url):
    # A scoring model that cannot be loaded: a real failure inside the stage.
    settings = ServiceSettings(
        preload_models=False, routes={"ok": echo_url}, compress_min_tokens=0,
        scorer_model="/nonexistent/model",
    )  # fmt: skip
    state = local_state(provider, local_lm, settings)
    with serve_app(create_app(settings, state=state)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        answer, headers = ask(client, LONG, compression={"method": "llmlingua", "rate": 0.5})
    assert headers["x-thresher-failed-stage"] == "compression"
    assert "Error" in headers["x-thresher-fail-reason"]  # the reason, in one header line
    assert answer.choices[0].message.content == "echo 3 messages"
    report = answer.model_extra["thresher"]
    assert report["tokens_after"] == report["tokens_before"]


def test_llmlingua2_compresses_in_the_proxy(proxy):
    client, _ = proxy
    answer, _ = ask(client, LONG, compression={"method": "llmlingua2", "rate": 0.5})
    report = answer.model_extra["thresher"]
    assert stage(report, "compression")["status"] == "ran"
    assert 0 < report["tokens_after"] < 0.75 * report["tokens_before"]
    assert answer.choices[0].message.content == "echo 3 messages"
