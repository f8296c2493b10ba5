"""Compression keeps a real server's prefix cache: llama-cpp-python's server logs, per request,
how many prompt tokens it took from its KV cache (``N prefix-match hit, remaining M prompt
tokens to eval``); over a scripted chat, that share with compression stays near the share
without it. bench/conversation.py --llama reports the figures."""

from __future__ import annotations

import json
import re
import subprocess
from contextlib import ExitStack

import openai
import pytest

from tests.api.conftest import make_app
from tests.api.servers import free_port, needs_redis, redis_server, serve_app, wait_until_up
from tests.api.test_llama_backend import LLAMA_PYTHON, gguf

pytestmark = pytest.mark.slow
HIT = re.compile(r"(\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")


@pytest.fixture(scope="module")
def passages(data_dir):
    out = []
    for line in (data_dir / "api" / "longqa_small.jsonl").open():
        text = json.loads(line)["context"]
        out += [text[i : i + 400] for i in range(0, len(text) - 400, 400)]
    return out


def chat_share(
    tmp_path, provider, local_lm, passages, compression, replicas: int = 1, **settings
) -> float:
    """The share of prompt tokens after the first turn that the server took from its cache;
    with ``replicas`` apps (built with ``settings``) taking the turns round robin."""
    if not LLAMA_PYTHON.exists():
        pytest.skip(f"llama-cpp-python server not installed at {LLAMA_PYTHON}: make llama-server")
    port = free_port()
    log = tmp_path / f"llama-{port}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(gguf()),
             "--model_alias", "llama", "--host", "127.0.0.1", "--port", str(port),
             "--n_ctx", "4096", "--n_threads", "2", "--verbose", "true"],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/v1/models", timeout=120, process=proc)
        with ExitStack() as stack:
            clients = []
            for _ in range(replicas):
                app = make_app(
                    provider, local_lm, routes={"llama": f"http://127.0.0.1:{port}/v1"},
                    compress_min_tokens=50, **settings,
                )  # fmt: skip
                base = stack.enter_context(serve_app(app))
                clients.append(openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0))
            messages = [{"role": "system", "content": "Answer in one short sentence."}]
            hits: list[tuple[int, int]] = []
            for t in range(10):
                messages.append({"role": "user", "content": f"{passages[2 * t]}\nWho is it?"})
                seen = len(HIT.findall(log.read_text()))
                clients[t % replicas].chat.completions.create(
                    model="llama", messages=messages, max_tokens=8, temperature=0,
                    extra_body={"thresher": {"compression": compression}} if compression else {},
                )  # fmt: skip
                found = HIT.findall(log.read_text())[seen:]
                if t:
                    hits += [(int(a), int(b)) for a, b in found]
                messages.append({"role": "assistant", "content": passages[2 * t + 1][:200]})
    finally:
        proc.kill()
        proc.wait(10)
    assert hits, "the server logged no prefix-match lines"
    return sum(a for a, _ in hits) / sum(a + b for a, b in hits)


def test_compression_keeps_the_servers_prefix_cache(tmp_path, provider, local_lm, passages):
    without = chat_share(tmp_path, provider, local_lm, passages, None)
    with_compression = chat_share(
        tmp_path, provider, local_lm, passages, {"rate": 0.5, "when": "always"}
    )
    assert without > 0.5
    assert with_compression >= 0.9 * without


@needs_redis
def test_two_replicas_sharing_redis_keep_the_prefix_cache_of_one(
    tmp_path, provider, local_lm, passages
):
    compression = {"rate": 0.5, "when": "always"}
    one = chat_share(tmp_path, provider, local_lm, passages, compression)
    with redis_server() as (url, _):
        two = chat_share(tmp_path, provider, local_lm, passages, compression, replicas=2,
                         redis_url=url)  # fmt: skip
    print(f"\nllama.cpp prompt-cache share: one replica {one:.3f}, two sharing Redis {two:.3f}")
    assert two >= one - 0.02  # within 2 points of one replica's share
