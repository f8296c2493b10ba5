"""Retrieval latency and recall: top-10 from a large pool of real sentences, flat vs IVF vs HNSW.

The pool is ``--size`` distinct real sentences cut from ../shared/data (the mixed-domain raw pool
and the instruction inputs and outputs), so the embeddings cluster like real text; queries are
real held-out texts (the ICL test splits, none of them in the pool). Pool embeddings are cached
under bench/.cache, so only the first run pays for them. For each index it reports the build
time, recall@10 against exact search, the index search alone and ``knn`` end to end (live
float32 query embedding + search + records), p50/p99 per query, one query at a time. ``--sweep``
adds the recall/latency curve of IVF nprobe and HNSW efSearch, ``--flat-sizes`` the exact-search
latency by pool size that sets where the automatic index leaves flat.

    python bench/retrieval_latency.py --smoke
    flock /work/helpers/bench.lock python bench/retrieval_latency.py --size 100000 --queries 300
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embedcache import cached_encode, shared_data  # noqa: E402

from thresher.core.files import atomic_write_text  # noqa: E402
from thresher.core.models import ModelProvider  # noqa: E402
from thresher.prompting import IndexConfig, Pool, demonstration, get_retriever  # noqa: E402

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def real_sentences(data: Path, n: int, seed: int) -> list[str]:
    """``n`` distinct sentences (30-300 characters) from the raw pool and instruction data."""
    seen: dict[str, str] = {}
    sources = [
        (data / "raw_pool.jsonl", ("text",)),
        (data / "instructions.jsonl", ("input", "output")),
    ]
    for path, fields in sources:
        with open(path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                for field in fields:
                    for s in _SENTENCE.split(row[field].replace("\n", " ")):
                        s = " ".join(s.split())
                        if 30 <= len(s) <= 300:
                            seen.setdefault(s.lower(), s)
    texts = list(seen.values())
    if len(texts) < n:
        raise SystemExit(f"Only {len(texts)} distinct sentences; ask for --size <= {len(texts)}.")
    rng = np.random.default_rng(seed)
    return [texts[i] for i in sorted(rng.choice(len(texts), n, replace=False))]


def real_queries(data: Path, n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` held-out texts drawn from the three ICL test splits together, and each one's task."""
    texts, tasks = [], []
    for task in ("intent", "rotten_tomatoes", "amazon_food"):
        with open(data / "icl" / f"{task}_test.jsonl", encoding="utf-8") as f:
            for line in f:
                texts.append(json.loads(line)["text"])
                tasks.append(task)
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(texts), n, replace=False)
    return [texts[i] for i in picked], [tasks[i] for i in picked]


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def timed(fn, items: list, warmup: int = 5) -> dict[str, float]:
    for x in items[:warmup]:
        fn(x)
    seconds = []
    for x in items:
        start = time.perf_counter()
        fn(x)
        seconds.append(time.perf_counter() - start)
    return percentiles(seconds)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact, strict=True)]))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: argparse.Namespace) -> list[dict]:
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    data = shared_data()
    provider = ModelProvider(device="cpu")
    embedder = provider.embedder()
    texts = real_sentences(data, args.size, args.seed)
    vectors = cached_encode(embedder, texts, label=f"sentences-{args.size}")
    if args.embed_only:
        return []
    queries, tasks = real_queries(data, args.queries, args.seed)
    qv = embedder.encode(queries)
    exact = np.argsort(-(qv @ vectors.T), axis=1)[:, : args.k]
    records = [demonstration(f"s{i}", t) for i, t in enumerate(texts)]
    pool_name = f"real sentences {args.size}"
    rows: list[dict] = []

    def emit(row: dict) -> None:
        row = {"pool": pool_name, "queries": len(queries), "load": load(), **row}
        print(json.dumps(row), flush=True)
        rows.append(row)

    # Pool vectors always come from the float32 model; queries may use a bfloat16 copy.
    query_embedders = {dtype: provider.embedder(dtype=dtype) for dtype in args.query_dtypes}
    # The embedding is a forward pass over the query: its time follows the query's length.
    tokenizer, longest = embedder.model.tokenizer, embedder.model.max_seq_length
    by_task: dict[str, list[str]] = {}
    for q, t in zip(queries, tasks, strict=True):
        by_task.setdefault(t, []).append(q)
    median_tokens = {
        t: int(np.median([min(len(tokenizer(q)["input_ids"]), longest) for q in qs]))
        for t, qs in by_task.items()
    }
    for dtype, query_embedder in query_embedders.items():
        emit(
            {
                "index": "-",
                "what": f"embed query (MiniLM, {dtype})",
                **timed(query_embedder.encode, [[q] for q in queries]),
            }
        )
        for task, mine in by_task.items():
            emit(
                {
                    "index": "-",
                    "what": f"embed query (MiniLM, {dtype}), {task} only, "
                    f"{len(mine)} queries of median {median_tokens[task]} tokens",
                    **timed(query_embedder.encode, [[q] for q in mine]),
                }
            )
    for kind in args.indexes:
        start = time.perf_counter()
        pool = Pool(embedder, index=IndexConfig(kind=kind)).fit(records, embeddings=vectors)
        build = round(time.perf_counter() - start, 2)
        index = pool.index_
        label = kind if kind != "auto" else f"auto={index.kind}"
        found = pool.search(qv, args.k)[1]
        params = index.params()
        emit(
            {
                "index": label,
                "what": "search",
                "params": params,
                "build_s": build,
                "recall_at_10": round(recall(found, exact), 4),
                **timed(lambda i, p=pool: p.search(qv[i], args.k), list(range(len(queries)))),
            }
        )
        for dtype, query_embedder in query_embedders.items():
            pool.embedder = query_embedder
            knn = get_retriever("knn").fit(pool)
            found = pool.search(query_embedder.encode(queries), args.k)[1]
            emit(
                {
                    "index": label,
                    "what": f"knn end to end ({dtype} query)",
                    "params": params,
                    "build_s": build,
                    "recall_at_10": round(recall(found, exact), 4),
                    **timed(lambda q, r=knn: r.retrieve(q, args.k), queries),
                }
            )
        pool.embedder = embedder
        if args.sweep and index.kind in ("ivf", "hnsw"):
            values = [4, 8, 16, 32, 64, 128] if index.kind == "ivf" else [16, 32, 64, 128, 256]
            for value in values:
                index.tune(nprobe=value) if index.kind == "ivf" else index.tune(ef_search=value)
                found = pool.search(qv, args.k)[1]
                emit(
                    {
                        "index": label,
                        "what": "sweep",
                        "params": index.params(),
                        "recall_at_10": round(recall(found, exact), 4),
                        **timed(
                            lambda i, p=pool: p.search(qv[i], args.k), list(range(len(queries)))
                        ),
                    }
                )
    for size in args.flat_sizes:
        pool = Pool(embedder, index="flat").fit(records[:size], embeddings=vectors[:size])
        emit(
            {
                "pool": f"real sentences {size}",
                "index": "flat",
                "what": "search by size",
                **timed(lambda i, p=pool: p.search(qv[i], args.k), list(range(len(queries)))),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| pool | index | what | params | build s | recall@10 | p50 ms | p99 ms | load |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        params = " ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items())
        lines.append(
            f"| {r['pool']} | {r['index']} | {r['what']} | {params} | {r.get('build_s', '')} | "
            f"{r.get('recall_at_10', '')} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['load']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--indexes", nargs="+", default=["auto", "flat", "ivf", "hnsw"])
    parser.add_argument("--sweep", action="store_true", help="IVF nprobe / HNSW efSearch curve")
    parser.add_argument("--flat-sizes", nargs="*", type=int, default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--query-dtypes", nargs="+", default=["float32", "bfloat16"], help="query embedder dtypes"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--embed-only", action="store_true", help="fill the embedding cache, no timing"
    )
    parser.add_argument("--out", default="bench/results/retrieval_latency.json")
    parser.add_argument("--smoke", action="store_true", help="2k sentences, 30 queries")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.queries, args.sweep, args.flat_sizes = 2_000, 30, False, []
        args.out = str(Path(args.out).with_name("retrieval_latency_smoke.json"))
    rows = run(args)
    if args.embed_only:
        return
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join(sys.argv), "threads": args.threads, "rows": rows}
    atomic_write_text(Path(args.out), json.dumps(result, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
