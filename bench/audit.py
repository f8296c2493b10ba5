"""Audit mode, measured: what compression would save on replayed chats and whether the answers
would change, per rate; and what auditing costs the clients whose requests are sampled.

Replay (default): chats (tests/data/api/chats_small.jsonl, written for this) and long-context
QA stories go through the proxy in audit mode (every request sampled, every rate in turn)
against the local model, served under the route name of a priced model (``--price-as``, priced
by genai-prices), so money is that model's list price for these token counts. The report is
``GET /v1/audit``: per rate, prompt tokens saved, money saved, the change in output length and
the share of answers that agree (exact for short answers, embeddings for long ones).

Latency (``--latency``): ``thresher serve`` against bench/fast_backend.py (50 ms answers), a
long prompt, ``--clients`` closed-loop clients; audit off, then on (``--sample`` of requests):
client latency of audited requests against unaudited ones in the same run, and against off.

    python bench/audit.py                                  # replay, rates 0.33 0.5 0.7
    python bench/audit.py --longqa ../shared/data/longqa.jsonl --stories 8
    python bench/audit.py --latency --seconds 30
    python bench/audit.py --smoke                          # both, small (about two minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages, not another install of thresher
from proxy import free_port, start  # noqa: E402 - bench/ is sys.path[0]

DATA = ROOT / "tests" / "data" / "api"


def chats(path: Path, limit: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()[:limit]]
    return [{"id": r["id"], "messages": r["messages"]} for r in rows]


def stories(path: Path, limit: int, chars: int) -> list[dict]:
    out = []
    for line in path.read_text().splitlines()[:limit]:
        row = json.loads(line)
        out.append({"id": row["id"], "messages": [
            {"role": "system", "content": "Answer the question about the story in a few words."},
            {"role": "user", "content": row["context"][:chars]},
            {"role": "user", "content": row["question"]},
        ]})  # fmt: skip
    return out


def replay(items: list[dict], rates: list[float], model: str, max_tokens: int) -> dict:
    """Every item once per rate through an app in audit mode; the tenant's audit report."""
    from fastapi.testclient import TestClient

    from thresher.api.app import create_app
    from thresher.api.settings import service_settings

    settings = service_settings(
        data_dir=ROOT / ".thresher" / "bench", routes={model: {"url": "local"}},
        compress_min_tokens=50, audit_sample=1.0, audit_rates=rates,
        audit_send_per_minute=100_000, audit_queue=4, local_max_new_tokens=max_tokens,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        began = time.perf_counter()
        for n, item in enumerate(items):
            for _ in rates:  # the audit takes the rates in turn: each item meets every one
                body = {"model": model, "messages": item["messages"], "max_tokens": max_tokens,
                        "temperature": 0}  # fmt: skip
                answer = client.post("/v1/chat/completions", json=body)
                answer.raise_for_status()
                while client.get("/v1/audit").json()["pending"]:  # one audit at a time
                    time.sleep(0.1)
            print(f"  {n + 1}/{len(items)} {item['id'][:40]} "
                  f"({time.perf_counter() - began:.0f} s)", flush=True)  # fmt: skip
        return client.get("/v1/audit").json()


def print_report(report: dict) -> None:
    print(f"{'rate':>5} {'n':>3} {'saved tok':>9} {'saved':>6} {'saved USD':>10} "
          f"{'out before':>10} {'out after':>9} {'out chg':>8} {'agree':>6} {'sim':>5} paid")
    for r in report["rows"]:
        usd = "-" if r["saved_usd"] is None else f"{r['saved_usd']:+.6f}"
        chg = "-" if r["output_change"] is None else f"{r['output_change']:+.1%}"
        agree = "-" if r["agreement"] is None else f"{r['agreement']:.2f}"
        sim = "-" if r["mean_similarity"] is None else f"{r['mean_similarity']:.2f}"
        print(f"{r['rate']:>5g} {r['samples']:>3} {r['saved_tokens']:>9} "
              f"{r['saved_share']:>6.1%} {usd:>10} {r['output_tokens_original']:>10} "
              f"{r['output_tokens_compressed']:>9} {chg:>8} {agree:>6} {sim:>5} {r['paid']}")
    print(f"paid at: {report['paid_at'] or 'no rate'}")  # fmt: skip


async def load(url: str, body: dict, clients: int, seconds: float) -> list[tuple[float, bool]]:
    """``clients`` closed-loop clients for ``seconds``: (latency s, audited) per request."""
    out: list[tuple[float, bool]] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as c:

        async def worker() -> None:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                answer = await c.post(url, json=body)
                took = time.perf_counter() - t0
                answer.raise_for_status()
                out.append((took, "x-thresher-audit" in answer.headers))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return out


def latency(sample: float, clients: int, seconds: float, text: str) -> list[dict]:
    """Client latency with audit off, then on: audited and unaudited requests apart."""
    backend_port = free_port()
    backend_url = f"http://127.0.0.1:{backend_port}/v1"
    backend = start([sys.executable, "bench/fast_backend.py", str(backend_port), "--delay-ms",
                     "50"], f"{backend_url}/models")  # fmt: skip
    body = {"model": "fast", "max_tokens": 8, "messages": [
        {"role": "user", "content": text}, {"role": "user", "content": "Who did it?"}]}
    rows = []
    try:
        for share in (0.0, sample):
            port = free_port()
            env = {**os.environ, "THRESHER_PRELOAD_MODELS": "false",
                   "THRESHER_DATA_DIR": str(ROOT / ".thresher" / "bench"),
                   "THRESHER_AUDIT_SAMPLE": str(share), "THRESHER_AUDIT_SEND_PER_MINUTE": "6000",
                   "THRESHER_COMPRESS_MIN_TOKENS": "50"}  # fmt: skip
            proxy = start([sys.executable, "-m", "thresher", "serve", "--port", str(port),
                           "--backend", backend_url, "--model", "fast", "--no-access-log"],
                          f"http://127.0.0.1:{port}/healthz", env)  # fmt: skip
            try:
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                asyncio.run(load(url, body, clients, min(3.0, seconds)))  # warm-up
                done = asyncio.run(load(url, body, clients, seconds))
            finally:
                proxy.terminate()
                proxy.wait(20)
            for label, audited in (("off", None),) if share == 0 else (
                ("on, unaudited", False), ("on, audited", True)
            ):  # fmt: skip
                lat = np.array([t for t, a in done if audited is None or a == audited]) * 1000
                row = {"audit": label, "sample": share, "requests": len(lat),
                       "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                       "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None}  # fmt: skip
                rows.append(row)
                p50 = "-" if row["p50_ms"] is None else f"{row['p50_ms']:.2f}"
                p99 = "-" if row["p99_ms"] is None else f"{row['p99_ms']:.2f}"
                print(f"audit {label:<14} n={row['requests']:>5} p50 {p50} ms p99 {p99} ms")
    finally:
        backend.terminate()
        backend.wait(20)
    audited = next(r for r in rows if r["audit"] == "on, audited")
    unaudited = next(r for r in rows if r["audit"] == "on, unaudited")
    if audited["p50_ms"] is not None and unaudited["p50_ms"] is not None:
        print(f"audited - unaudited p50: {audited['p50_ms'] - unaudited['p50_ms']:+.2f} ms")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small: 2 items, 2 rates, 3 s")
    parser.add_argument("--latency", action="store_true", help="only the client-latency run")
    parser.add_argument("--chats", type=Path, default=DATA / "chats_small.jsonl")
    parser.add_argument("--longqa", type=Path, default=DATA / "longqa_small.jsonl")
    parser.add_argument("--items", type=int, default=4, help="chats taken from --chats")
    parser.add_argument("--stories", type=int, default=4, help="stories taken from --longqa")
    parser.add_argument("--chars", type=int, default=3000, help="characters of each story")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.33, 0.5, 0.7])
    parser.add_argument("--price-as", default="gpt-4o-mini",
                        help="the route name the local model answers to (its price)")  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--sample", type=float, default=0.2, help="--latency: audited share")
    parser.add_argument("--clients", type=int, default=4, help="--latency: concurrent clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="--latency: per run")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out: dict = {}
    text = json.loads(args.longqa.read_text().splitlines()[0])["context"][: args.chars]
    if not args.latency:
        items = chats(args.chats, 1 if args.smoke else args.items)
        items += stories(args.longqa, 1 if args.smoke else args.stories, args.chars)
        rates = args.rates[:2] if args.smoke else args.rates
        print(f"replay: {len(items)} items x rates {rates}, answers priced as {args.price_as}")
        out["replay"] = replay(items, rates, args.price_as, 8 if args.smoke else args.max_tokens)
        print_report(out["replay"])
    seconds = 3.0 if args.smoke else args.seconds
    print(f"latency: {args.clients} clients, {seconds:g} s per run, audit sample {args.sample}")
    out["latency"] = latency(args.sample, args.clients, seconds, text)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
