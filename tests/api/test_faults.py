"""Backend faults against real loopback servers: 500s, flakiness, timeouts, a process killed
mid-stream, connection refused. The proxy retries what is safe and answers OpenAI errors."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.api.conftest import make_app
from tests.api.servers import fault_backend, free_port, serve_app

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def faults(provider, local_lm):
    with fault_backend() as (url, _), fault_backend() as (drip_url, drip_proc):
        refused = f"http://127.0.0.1:{free_port()}/v1"
        routes = {
            "ok": url,
            "fail-500": url,
            "flaky-2": url,
            "flaky-9": url,
            "slow": {"url": url, "timeout": 0.5},
            "drip": drip_url,
            "refused": refused,
        }
        app = make_app(provider, local_lm, routes=routes, backend_retries=2, backend_backoff=0.05)
        with serve_app(app) as base:
            yield {"base": base, "backend": url, "drip_proc": drip_proc}


def post(faults, model, **extra):
    body = {"model": model, "messages": MESSAGES, **extra}
    return httpx.post(f"{faults['base']}/v1/chat/completions", json=body, timeout=30)


def test_healthy_backend_passes_through(faults):
    response = post(faults, "ok")
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo 1 messages"


def test_500_is_retried_then_a_clean_502(faults):
    before = httpx.get(f"{faults['backend'][:-3]}/counts").json().get("fail-500", 0)
    response = post(faults, "fail-500")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "api_error" and "HTTP 500" in error["message"]
    after = httpx.get(f"{faults['backend'][:-3]}/counts").json()["fail-500"]
    assert after - before == 3  # the first try and two retries


def test_a_backend_error_names_no_internal_url_and_carries_a_request_id(faults):
    for model in ("fail-500", "slow", "refused"):
        response = post(faults, model)
        assert response.status_code in (502, 504)
        message = response.json()["error"]["message"]
        assert "127.0.0.1" not in response.text and "http://" not in response.text
        assert response.headers["x-request-id"] in message


def test_a_timed_out_generation_is_not_sent_again(faults):
    counts = f"{faults['backend'][:-3]}/counts"
    before = httpx.get(counts).json().get("slow", 0)
    assert post(faults, "slow").status_code == 504
    assert httpx.get(counts).json()["slow"] - before == 1


def test_flaky_backend_recovers_within_the_retries(faults):
    assert post(faults, "flaky-2").status_code == 200
    assert post(faults, "flaky-9").status_code == 502  # more failures than retries


def test_slow_backend_times_out_as_504(faults):
    start = time.monotonic()
    response = post(faults, "slow")
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "backend_timeout"
    assert time.monotonic() - start < 10  # three 0.5 s timeouts plus backoff, not 30 s


def test_connection_refused_is_a_502_also_for_streams(faults):
    assert post(faults, "refused").status_code == 502
    assert post(faults, "refused", stream=True).status_code == 502


def test_metrics_count_backend_errors(faults):
    post(faults, "fail-500")
    text = httpx.get(f"{faults['base']}/metrics").text
    assert 'thresher_backend_errors_total{backend="' in text and 'kind="http_500"' in text


def test_backend_killed_mid_stream_ends_the_stream_with_an_error(faults):
    client = openai.OpenAI(base_url=f"{faults['base']}/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(model="drip", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
            if len(received) == 2:
                faults["drip_proc"].kill()
    assert received[:2] == ["w0 ", "w1 "] and len(received) < 50
    assert "cut short" in str(caught.value)
