"""The red-team pass's cases, kept: each input class answered 4xx with the OpenAI error body,
never a 5xx, and the keep-alive connection stays usable after it. Against a real server."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.conftest import LOCAL, make_app
from tests.api.servers import fault_backend, serve_app

KEY = "red-key"
AUTH = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
POOL = "red-pool"
LONE = "\ud800"
HUGE = [2**64, 10**100]
PARTS = [{"type": "text", "text": "Mary went to the market. She bought apples and pears."}]


@pytest.fixture(scope="module")
def server(provider, local_lm):
    with fault_backend() as (url, _):
        routes = {"ok": url, "echo": url, "not-sse": url, "slow": {"url": url, "timeout": 0.5}}
        app = make_app(provider, local_lm, api_keys=[KEY], routes=routes, backend_backoff=0.01)
        with serve_app(app) as base, httpx.Client(base_url=base, timeout=60) as client:
            records = [
                {"id": str(i), "text": f"example {i}", "label": "ab"[i % 2]} for i in range(6)
            ]
            made = client.post("/v1/pools", json={"name": POOL, "records": records}, headers=AUTH)
            assert made.status_code == 201, made.text
            yield client


def post(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    # json.dumps writes a lone surrogate as the escape a client sends: "\ud800".
    return client.post(path, content=json.dumps(body).encode(), headers=AUTH)


def chat(content, **extra):
    return {"model": LOCAL, "max_tokens": 1, "messages": [{"role": "user", "content": content}],
            **extra}  # fmt: skip


COMPRESS = {"compression": {"rate": 0.5}}
CASES = {
    "chat content": ("/v1/chat/completions", chat(f"hello {LONE} there")),
    "chat content compressed": (
        "/v1/chat/completions",
        chat(f"hello {LONE} there " * 40, thresher=COMPRESS),
    ),
    "chat content part": ("/v1/chat/completions", chat([{"type": "text", "text": LONE}])),
    "chat remote": ("/v1/chat/completions", {**chat(LONE), "model": "ok"}),
    "chat role name": ("/v1/chat/completions", {**chat("hi"), "user": LONE}),
    "completion prompt": ("/v1/completions", {"model": LOCAL, "prompt": LONE, "max_tokens": 1}),
    "demonstrations query": ("/v1/demonstrations", {"pool": POOL, "query": LONE, "k": 2}),
    "pool record": ("/v1/pools", {"name": "p2", "records": [{"id": "1", "text": LONE}]}),
    "compress context": ("/v1/compress", {"context": f"a {LONE} b", "rate": 0.5}),
    "compress question": ("/v1/compress", {"context": "a b", "question": LONE, "rate": 0.5}),
    "compress parts": (
        "/v1/compress",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": LONE}]}]},
    ),
    "max_tokens 2^64": ("/v1/chat/completions", chat("hi", max_tokens=HUGE[0])),
    "max_tokens 10^100": ("/v1/chat/completions", chat("hi", max_tokens=HUGE[1])),
    "max_tokens remote": (
        "/v1/chat/completions",
        {**chat("hi", max_tokens=HUGE[1]), "model": "ok"},
    ),
    "completion max_tokens": (
        "/v1/completions",
        {"model": LOCAL, "prompt": "x", "max_tokens": HUGE[0]},
    ),
    "seed local": ("/v1/chat/completions", chat("hi", seed=HUGE[0])),
    "seed remote": ("/v1/chat/completions", {**chat("hi", seed=HUGE[1]), "model": "ok"}),
    "token ids remote": ("/v1/completions", {"model": "ok", "prompt": [HUGE[0]]}),
    "top_p local": ("/v1/chat/completions", chat("hi", top_p=HUGE[1])),
    "compress target": ("/v1/compress", {"context": "a b c", "target_tokens": HUGE[1]}),
    "demonstrations k": ("/v1/demonstrations", {"pool": POOL, "query": "q", "k": HUGE[1]}),
    "demonstrations budget": (
        "/v1/demonstrations",
        {"pool": POOL, "query": "q", "k": 2, "budget_tokens": HUGE[0]},
    ),
}
# Not sent on to a backend, so a huge value is simply a large budget: any answer but a 5xx.
HARMLESS = {
    "thresher budget": ("/v1/chat/completions", chat("hi", thresher={"budget_tokens": HUGE[1]})),
    "seed surrogate pair": ("/v1/chat/completions", {**chat("hi"), "user": "\U0001f600"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_input_class_is_a_4xx_with_the_openai_body(server, case):
    path, body = CASES[case]
    response = post(server, path, body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert "Traceback" not in response.text
    # The same keep-alive connection answers the next request.
    assert server.get("/v1/models", headers=AUTH).status_code == 200


@pytest.mark.parametrize("case", list(HARMLESS))
def test_harmless_values_are_no_server_error(server, case):
    assert post(server, *HARMLESS[case]).status_code < 500


def test_a_lone_surrogate_names_the_field(server):
    response = post(server, *CASES["chat content"])
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "messages[0].content"


def test_a_huge_integer_names_the_field(server):
    response = post(server, *CASES["seed remote"])
    assert response.status_code == 422 and response.json()["error"]["param"] == "seed"


def test_a_surrogate_pair_is_fine(server):
    response = post(server, "/v1/chat/completions", {**chat("smile \U0001f600"), "model": "echo"})
    assert response.status_code == 200, response.text
    assert response.json()["received"]["messages"][0]["content"] == "smile \U0001f600"


@pytest.mark.parametrize("path", ["/v1/compress", "/v1/chat/completions"])
def test_content_parts_are_accepted_where_content_is(server, path):
    body = {"messages": [{"role": "user", "content": PARTS * 3}], "rate": 0.5}
    if path != "/v1/compress":
        body = {**chat(PARTS * 3), "thresher": COMPRESS}
    response = post(server, path, body)
    assert response.status_code == 200, response.text


def test_a_non_sse_answer_to_a_stream_is_a_502_not_an_empty_stream(server):
    response = post(server, "/v1/chat/completions", {**chat("hi"), "model": "not-sse",
                                                      "stream": True})  # fmt: skip
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "backend_protocol_error"


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_stops_the_local_generation(provider, local_lm, stream):
    # A client that asked for thousands of tokens and hung up used to keep the local model
    # generating for minutes, and every other tenant's request waited behind it.
    app = make_app(provider, local_lm)
    body = {
        "model": LOCAL,
        "messages": [{"role": "user", "content": "Count from 1 to 5000, one number per line."}],
        "max_tokens": 3000,
        "temperature": 0,
        "stream": stream,
    }
    with serve_app(app) as base:
        url = f"{base}/v1/chat/completions"
        if stream:
            with httpx.stream("POST", url, json=body, timeout=30) as answer:
                next(answer.iter_lines())  # the first event: generation has begun
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url, json=body, timeout=httpx.Timeout(10, read=1.5))
        lock = app.state.thresher.backend._lock
        assert lock.acquire(timeout=5)  # stopped within a token or two, not after 3,000
        lock.release()
