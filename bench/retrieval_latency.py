"""Retrieval latency: top-10 from a large pool, p50/p99 per query on CPU, and build time.

Embedding 100k texts with MiniLM takes many minutes on 2 cores, so the large pool holds
synthetic texts (Zipf-distributed words, so BM25 has something to rank) with random unit vectors;
query vectors are given, which times everything but the query embedding. The query embedding
itself is timed separately with the real MiniLM on real queries, and the end-to-end ``knn`` call
(embed + search) on a real-text pool.

    python bench/retrieval_latency.py --smoke
    python bench/retrieval_latency.py --size 100000 --queries 500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.models import ModelProvider  # noqa: E402
from prompting import IndexConfig, Pool, demonstration, get_retriever  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "prompting"


def synthetic(n: int, dim: int, rng: np.random.Generator) -> tuple[list, np.ndarray]:
    vocab = np.array([f"w{i}" for i in range(20_000)])
    ranks = np.minimum(rng.zipf(1.3, size=(n, 12)), len(vocab)) - 1
    labels = [f"label{i}" for i in range(8)]
    records = [
        demonstration(f"s{i}", " ".join(vocab[ranks[i]]), label=labels[i % 8]) for i in range(n)
    ]
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return records, vectors


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def time_queries(fn, queries: list, warmup: int = 3) -> dict[str, float]:
    for q in queries[:warmup]:
        fn(q)
    seconds = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        seconds.append(time.perf_counter() - start)
    return percentiles(seconds)


def run(args: argparse.Namespace) -> list[dict]:
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    embedder = ModelProvider(device="cpu").embedder()
    rng = np.random.default_rng(0)
    records, vectors = synthetic(args.size, embedder.dim, rng)
    qv = rng.standard_normal((args.queries, embedder.dim)).astype(np.float32)
    qv /= np.linalg.norm(qv, axis=1, keepdims=True)
    qtext = [records[int(i)].text for i in rng.choice(args.size, args.queries)]
    rows = []
    for kind in args.indexes:
        start = time.perf_counter()
        pool = Pool(embedder, index=IndexConfig(kind=kind)).fit(records, embeddings=vectors)
        build = time.perf_counter() - start
        methods = args.methods if kind == "flat" else ["knn"]
        for method in methods:
            start = time.perf_counter()
            retriever = get_retriever(method).fit(pool)
            fit = time.perf_counter() - start
            stats = time_queries(
                lambda i, r=retriever: r.retrieve(qtext[i], args.k, vector=qv[i]),
                list(range(args.queries)),
            )
            if kind != "flat":  # how many of the exact top-k the approximate index finds
                exact = np.argsort(-(qv[:50] @ vectors.T), axis=1)[:, : args.k]
                found = [retriever.retrieve(qtext[i], args.k, vector=qv[i]).ids for i in range(50)]
                stats["recall_at_k"] = float(
                    np.mean(
                        [
                            len({f"s{j}" for j in exact[i]} & set(found[i])) / args.k
                            for i in range(50)
                        ]
                    )
                )
            row = {
                "pool": f"synthetic {args.size}",
                "index": kind,
                "method": method,
                "build_s": round(build, 2),
                "fit_s": round(fit, 2),
                **stats,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.real_queries <= 0:
        return rows
    # Real text: MiniLM query embedding alone, and knn end to end (embed + search).
    with open(REAL / "intent_pool.jsonl", encoding="utf-8") as f:
        real = [json.loads(line) for line in f]
    with open(REAL / "intent_test.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f][: args.real_queries]
    start = time.perf_counter()
    pool = Pool(embedder).fit([demonstration(r["id"], r["text"], label=r["label"]) for r in real])
    build = time.perf_counter() - start
    knn = get_retriever("knn").fit(pool)
    for what, fn in [
        ("embed query (MiniLM)", lambda q: embedder.encode([q])),
        ("knn end to end", lambda q: knn.retrieve(q, args.k)),
    ]:
        row = {
            "pool": f"intent {len(pool)} (real)",
            "index": "flat",
            "method": what,
            "build_s": round(build, 2),
            "fit_s": 0.0,
            **time_queries(fn, queries),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| pool | index | method | build s | fit s | p50 ms | p99 ms | recall@k |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        recall = f"{r['recall_at_k']:.3f}" if "recall_at_k" in r else "exact"
        lines.append(
            f"| {r['pool']} | {r['index']} | {r['method']} | {r['build_s']} | {r['fit_s']} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {recall} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--real-queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--indexes", nargs="+", default=["flat", "ivf", "hnsw"])
    parser.add_argument(
        "--methods", nargs="+", default=["knn", "random", "mmr", "dpp", "label_balanced", "bm25"]
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/retrieval_latency.json")
    parser.add_argument("--smoke", action="store_true", help="5k records, 50 queries")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.queries, args.real_queries = 5_000, 50, 20
        args.out = str(Path(args.out).with_name("retrieval_latency_smoke.json"))
    rows = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=2))
    os.replace(tmp, args.out)
    print(table(rows))


if __name__ == "__main__":
    main()
