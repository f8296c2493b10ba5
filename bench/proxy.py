"""Proxy overhead: p50/p99 added latency and requests/s through ``thresher serve`` against a fast
loopback backend, 50 concurrent clients, compared with the same load sent to the backend direct.
With ``--e2e``: long prompts end to end on the local backend, with and without compression.

    python bench/proxy.py            # 4000 requests each way
    python bench/proxy.py --smoke    # 400 requests each way, well under a minute
    python bench/proxy.py --e2e --data ../shared/data/longqa.jsonl --stories 6

Both servers are real processes on loopback; the load loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BODY = {
    "model": "fast",
    "max_tokens": 8,
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarise the plot of a short story in one line, please."},
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], url: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {proc.returncode}") from None
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError(url)


async def load(url: str, total: int, clients: int, time_limit: float) -> tuple[np.ndarray, float]:
    """``clients`` workers share ``total`` requests; returns latencies (s) and wall time."""
    latencies: list[float] = []
    remaining = [total]
    deadline = time.monotonic() + time_limit
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client: httpx.AsyncClient) -> None:
        while remaining[0] > 0 and time.monotonic() < deadline:
            remaining[0] -= 1
            t0 = time.perf_counter()
            response = await client.post(url, json=BODY)
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(min(clients, 20)):  # warm connections and caches
            await client.post(url, json=BODY)
        start_time = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - start_time
    return np.array(latencies), wall


def summary(name: str, lat: np.ndarray, wall: float) -> dict[str, float]:
    row = {
        "requests": int(len(lat)),
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "rps": float(len(lat) / wall),
    }
    print(
        f"{name:<8} {row['requests']:>6} req  p50 {row['p50_ms']:7.2f} ms  "
        f"p99 {row['p99_ms']:7.2f} ms  {row['rps']:8.1f} req/s"
    )
    return row


def end_to_end(data: Path, stories: int, rate: float, method: str, max_tokens: int) -> None:
    """Total time per long prompt through the proxy on the local backend, compressed or not."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import service_settings

    rows = [json.loads(line) for line in data.read_text().splitlines()[:stories]]
    settings = service_settings(data_dir=ROOT / ".thresher" / "bench", compress_min_tokens=0)
    results = []
    with TestClient(create_app(settings)) as client:
        model = settings.local_model
        for row in rows:
            messages = [
                {"role": "system", "content": "Answer the question about the story briefly."},
                {"role": "user", "content": row["context"]},
                {"role": "user", "content": row["question"]},
            ]
            row_result = {}
            for label, thresher in (
                ("plain", None),
                ("compressed", {"compression": {"method": method, "rate": rate}}),
            ):
                body = {"model": model, "messages": messages, "max_tokens": max_tokens,
                        "temperature": 0}  # fmt: skip
                if thresher:
                    body["thresher"] = thresher
                t0 = time.perf_counter()
                answer = client.post("/v1/chat/completions", json=body).json()
                seconds = time.perf_counter() - t0
                stages = {s["name"]: s["ms"] for s in answer["thresher"]["stages"]}
                row_result[label] = {
                    "seconds": seconds,
                    "prompt_tokens": answer["usage"]["prompt_tokens"],
                    "compression_ms": stages.get("compression", 0.0),
                }
            results.append(row_result)
            plain, comp = row_result["plain"], row_result["compressed"]
            print(
                f"{row['id'][:40]:<40} plain {plain['seconds']:6.2f} s "
                f"{plain['prompt_tokens']:5d} tok"
                f" | compressed {comp['seconds']:6.2f} s {comp['prompt_tokens']:5d} tok "
                f"(compression {comp['compression_ms'] / 1000:5.2f} s)"
            )
    total = {k: sum(r[k]["seconds"] for r in results) for k in ("plain", "compressed")}
    tokens = {k: sum(r[k]["prompt_tokens"] for r in results) for k in ("plain", "compressed")}
    print(
        f"total    plain {total['plain']:.1f} s, {tokens['plain']} prompt tokens | compressed "
        f"{total['compressed']:.1f} s, {tokens['compressed']} prompt tokens "
        f"({method}, rate {rate}); time ratio {total['compressed'] / total['plain']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="400 requests each way")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--e2e", action="store_true", help="long prompts on the local backend")
    parser.add_argument("--data", type=Path, default=ROOT / "tests/data/api/longqa_small.jsonl")
    parser.add_argument("--stories", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--method", default="llmlingua")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    if args.e2e:
        stories = 1 if args.smoke else args.stories
        end_to_end(args.data, stories, args.rate, args.method, args.max_tokens)
        return
    total = 400 if args.smoke else args.requests

    backend_port, proxy_port = free_port(), free_port()
    backend_url = f"http://127.0.0.1:{backend_port}/v1"
    env = {
        **os.environ,
        "THRESHER_PRELOAD_MODELS": "false",
        "THRESHER_DATA_DIR": str(ROOT / ".thresher" / "bench"),
        "THRESHER_LOG_LEVEL": "WARNING",
    }
    backend = start(
        [sys.executable, "bench/fast_backend.py", str(backend_port)], f"{backend_url}/models"
    )
    serve = [sys.executable, "-m", "api", "serve", "--port", str(proxy_port),
             "--backend", backend_url, "--model", "fast"]  # fmt: skip
    proxy = start(serve, f"http://127.0.0.1:{proxy_port}/healthz", env)
    try:
        print(f"{total} requests, {args.clients} concurrent clients, each way")
        direct = summary("direct", *asyncio.run(
            load(f"{backend_url}/chat/completions", total, args.clients, 300)
        ))  # fmt: skip
        proxied = summary("proxy", *asyncio.run(
            load(f"http://127.0.0.1:{proxy_port}/v1/chat/completions", total, args.clients, 300)
        ))  # fmt: skip
    finally:
        proxy.terminate()
        backend.terminate()
        proxy.wait(10)
        backend.wait(10)
    added = {
        "p50_added_ms": proxied["p50_ms"] - direct["p50_ms"],
        "p99_added_ms": proxied["p99_ms"] - direct["p99_ms"],
        "rps_ratio": proxied["rps"] / direct["rps"],
    }
    print(
        f"added    p50 {added['p50_added_ms']:+.2f} ms  p99 {added['p99_added_ms']:+.2f} ms  "
        f"proxy/direct req/s {added['rps_ratio']:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps({"direct": direct, "proxy": proxied, **added}, indent=2))


if __name__ == "__main__":
    main()
