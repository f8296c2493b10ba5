"""Benchmark: Thresher's DSIR against data-selection==1.0.3 (the DSIR authors' package).

Both select ``--num`` rows of the raw pool toward the target reviews with the same n-grams (2)
and hash buckets (10,000), on the same machine, each in its own process. Printed per system:
docs/s of each phase, total seconds, peak RSS, the fraction of selected rows whose source is a
review (``amazon_fine_food``), and the KL reduction of the selection toward the target, computed
for every system in the same (Thresher's) hashed feature space. Ray runs with 1 and 2 workers;
Ray's start-up time is printed apart from the job's time.

data-selection runs from its own venv (bench/.venv-dsir, created on first use) because it is a
peer, not a dependency. Usage::

    python bench/dsir.py            # ../shared/data raw_pool.jsonl -> target_reviews.jsonl
    python bench/dsir.py --smoke    # 3,000 raw rows, 300 targets, 200 picks, no Ray (--with-ray)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from embedcache import shared_data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's Thresher, not another install
DATA = shared_data(required=False)
SMOKE = ROOT / "tests" / "data" / "selection"
PEER_VENV = ROOT / "bench" / ".venv-dsir"
PEER = "data-selection==1.0.3"
REVIEW = "amazon_fine_food"

PEER_SCRIPT = r"""
import json, resource, sys, time
from data_selection import HashedNgramDSIR
raw, target, out, num, ngrams, buckets, procs, min_len = sys.argv[1:9]
t0 = time.perf_counter()
dsir = HashedNgramDSIR([raw], [target], cache_dir=out + "/cache", ngrams=int(ngrams),
                       num_buckets=int(buckets), num_proc=int(procs),
                       min_example_length=int(min_len))
dsir.fit_importance_estimator(num_tokens_to_fit="all")
t1 = time.perf_counter()
dsir.compute_importance_weights()
t2 = time.perf_counter()
dsir.resample(out_dir=out + "/picked", num_to_sample=int(num), cache_dir=out + "/rcache")
t3 = time.perf_counter()
rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"phases": [["fit raw+target", t1 - t0], ["importance weights", t2 - t1],
                             ["resample+write", t3 - t2]], "total": t3 - t0, "rss_kb": rss}))
"""


def peer_python() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEER_VENV} with {PEER} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PEER], check=True)
    return python


def run_peer(args, raw: Path, target: Path, work: Path) -> dict:
    out = work / "peer"
    print(f"running {PEER}", file=sys.stderr)
    run = subprocess.run(
        [
            str(peer_python()),
            "-c",
            PEER_SCRIPT,
            str(raw),
            str(target),
            str(out),
            str(args.num),
            "2",
            "10000",
            str(args.peer_procs),
            str(args.peer_min_length),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise SystemExit(f"data-selection failed:\n{run.stderr[-3000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    rows = [
        json.loads(line)
        for f in sorted((out / "picked").glob("*.jsonl"))
        for line in f.open(encoding="utf-8")
    ]
    result["ids"] = [r["id"] for r in rows]
    return result


def run_thresher(args, raw: Path, target: Path, work: Path, executor: str, workers: int) -> dict:
    out = work / f"thresher-{executor}-{workers}"
    print(f"running thresher {executor} with {workers} worker(s)", file=sys.stderr)
    run = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            executor,
            "--workers",
            str(workers),
            "--raw",
            str(raw),
            "--target",
            str(target),
            "--num",
            str(args.num),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if run.returncode != 0:
        raise SystemExit(f"thresher ({executor}) failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def child(args) -> None:
    """Run Thresher once in this process and print its timings as one JSON line."""
    from thresher import selection

    size = Path(args.raw).stat().st_size
    recipe = {
        "inputs": [{"path": args.raw, "shape": "text"}],
        "steps": [
            {
                "type": "dsir",
                "target": [{"path": args.target, "shape": "text"}],
                "num": args.num,
                "ngrams": 2,
                "buckets": 10000,
            }
        ],
        "output": {"path": "picked.jsonl"},
        "workers": args.workers,
        "shard_bytes": max(1 << 20, size // (2 * args.workers) + 1),
    }
    result = selection.run_recipe(recipe, args.out, executor=args.child, progress=False, fresh=True)
    ids = [json.loads(line)["id"] for line in result.output_path.open(encoding="utf-8")]
    rss = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    print(
        json.dumps(
            {
                "phases": [[p.name, p.seconds] for p in result.report.phases],
                "total": result.seconds,
                "rss_kb": rss,
                "ids": ids,
                "kl_own": result.report.metrics["dsir"]["kl_reduction"],
            }
        )
    )


def kl_reduction(raw: Path, target: Path, ids: list[str]) -> float:
    """KL(target||raw) - KL(target||selected) in Thresher's hashed feature space."""
    from thresher.selection.dsir import HashedNgramDSIR

    model = HashedNgramDSIR(ngrams=2, buckets=10000)
    raw_rows = [json.loads(line) for line in raw.open(encoding="utf-8")]
    target_texts = [json.loads(line)["text"] for line in target.open(encoding="utf-8")]
    model.fit_target([model.counts([target_texts])])
    model.fit_raw(model.counts([[r["text"] for r in raw_rows]]))
    chosen = set(ids)
    picked = model.counts([[r["text"] for r in raw_rows if r["id"] in chosen]])
    return model.kl_report(picked)["kl_reduction"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw", default=str(DATA / "raw_pool.jsonl"))
    parser.add_argument("--target", default=str(DATA / "target_reviews.jsonl"))
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="tiny input, under a minute")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument(
        "--with-ray",
        action="store_true",
        help="with --smoke: run Ray too (its start-up alone takes ~20s here)",
    )
    parser.add_argument("--peer-procs", type=int, default=2)
    parser.add_argument(
        "--peer-min-length",
        type=int,
        default=100,
        help="data-selection's min_example_length (its default: 100 tokens)",
    )
    parser.add_argument("--child", choices=["local", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="thresher-bench-") as tmp:
        work = Path(tmp)
        raw, target = Path(args.raw), Path(args.target)
        if args.smoke:  # the first 3,000 and 300 rows of the shared files, shipped in the repo
            raw, target = SMOKE / "raw_small.jsonl", SMOKE / "target_small.jsonl"
            args.num = 200
        n_docs = sum(1 for _ in raw.open(encoding="utf-8"))
        sources = {}
        for line in raw.open(encoding="utf-8"):
            row = json.loads(line)
            sources[row["id"]] = row.get("source")
        runs = {"data-selection 1.0.3": run_peer(args, raw, target, work)}
        runs["thresher local, 1 worker"] = run_thresher(args, raw, target, work, "local", 1)
        runs["thresher local, 2 workers"] = run_thresher(args, raw, target, work, "local", 2)
        if not args.skip_ray and (args.with_ray or not args.smoke):
            for workers in (1,) if args.smoke else (1, 2):
                runs[f"thresher ray, {workers} worker(s)"] = run_thresher(
                    args, raw, target, work, "ray", workers
                )
        base = runs["data-selection 1.0.3"]["total"]
        pool = collections.Counter(sources.values())
        print(
            f"raw {raw} ({n_docs} docs, {pool[REVIEW] / n_docs:.1%} reviews) -> "
            f"target {target}; select {args.num}; ngrams 2, buckets 10000"
        )
        for name, r in runs.items():
            picked = collections.Counter(sources.get(i) for i in r["ids"])
            frac = picked[REVIEW] / max(1, len(r["ids"]))
            kl = kl_reduction(raw, target, r["ids"])
            phases = ", ".join(f"{p}: {n_docs / s:,.0f} docs/s ({s:.1f}s)" for p, s in r["phases"])
            print(
                f"\n{name}\n  phases   {phases}\n"
                f"  total    {r['total']:.1f}s = {n_docs / r['total']:,.0f} docs/s "
                f"end to end, {base / r['total']:.1f}x data-selection\n"
                f"  peak RSS {r['rss_kb'] / 1024:.0f} MiB (largest process)\n"
                f"  selected {len(r['ids'])}, reviews {frac:.1%}, KL reduction {kl:.4f}"
            )


if __name__ == "__main__":
    main()
