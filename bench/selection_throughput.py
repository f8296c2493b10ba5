"""Throughput of the default `instruction-quality` recipe end to end, with a parity check.

Builds N Alpaca rows (100,000 by default) from ../shared/data/instructions.jsonl: the pool once
as it is, then perturbed copies (about a third of the words of input and output swapped for other
words of the pool, so copies are neither exact nor near duplicates of each other). Each job runs
in its own process, which reports wall time, rows per second and peak memory (its own and its
workers'); then a second run with other batch, shard and worker settings must keep exactly the
same rows (the parity check).

    python bench/selection_throughput.py [--rows 100000] [--workers 2] [--smoke]
        [--executor local|ray] [--json results.json]

``--json`` writes both runs' numbers (wall and CPU seconds, rows/s, peak memory, phases, the
kept rows' sha256), the parity verdict, the machine's load and the code's commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from embedcache import shared_data

ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, n: int, seed: int = 5) -> None:
    rows = [json.loads(line) for line in open(shared_data() / "instructions.jsonl", "rb")]
    rng = random.Random(seed)
    vocab = sorted({w for r in rows[:2000] for w in r["output"].split()})
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            row = dict(rows[i % len(rows)])
            copy = i // len(rows)
            if copy:
                row["id"] = f"{row['id']}-v{copy}"
                for field in ("input", "output"):
                    words = row[field].split(" ")
                    row[field] = " ".join(
                        rng.choice(vocab) if w and rng.random() < 0.33 else w for w in words
                    )
            fh.write(json.dumps(row) + "\n")


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from thresher import selection
    from thresher.selection.recipes import builtin_recipe

    recipe = builtin_recipe("instruction-quality")
    recipe["inputs"] = [{"path": str(args.input), "shape": "alpaca"}]
    recipe["output"] = {"path": "kept.jsonl", "scores": "inline"}
    recipe.update(batch_size=args.batch_size, workers=args.workers, shard_bytes=args.shard_bytes)
    if args.executor == "ray":
        import ray

        ray.init(num_cpus=max(2, args.workers), include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    result = selection.run_recipe(
        recipe, args.job, executor=args.executor, fresh=True, progress=False
    )
    seconds = time.perf_counter() - start
    me, workers = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    own, kids = me.ru_maxrss / 1024, workers.ru_maxrss / 1024
    cpu = me.ru_utime + me.ru_stime + workers.ru_utime + workers.ru_stime
    digest = hashlib.sha256(result.output_path.read_bytes()).hexdigest()[:16]
    phases = [(p.name, round(p.seconds, 2)) for p in result.report.phases]
    report = {"seconds": seconds, "rows": result.report.rows_read, "kept": result.report.rows_kept,
              "peak_mb": own, "worker_peak_mb": kids, "sha256": digest, "cpu_seconds": cpu,
              "summary": result.summary(), "phases": phases}  # fmt: skip
    print(json.dumps(report))


def run(path: Path, job: Path, batch_size: int, workers: int, shard_bytes: int,
        executor: str = "local") -> dict:  # fmt: skip
    cmd = [sys.executable, __file__, "--child", "--input", str(path), "--job", str(job),
           "--batch-size", str(batch_size), "--workers", str(workers),
           "--shard-bytes", str(shard_bytes), "--executor", executor]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="5,000 rows")
    parser.add_argument("--no-parity", action="store_true")
    parser.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="of the first run (the parity run is local, 1 worker)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--shard-bytes", type=int, default=64 << 20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    n = 5000 if args.smoke else args.rows
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        build(path, n)
        size = path.stat().st_size
        shard = max(1 << 20, size // (4 * args.workers))  # enough shards for every worker
        print(f"{n} rows, {size / 1e6:.0f} MB, shards of {shard / 1e6:.1f} MB")
        load_before = os.getloadavg()
        first = run(path, Path(tmp) / "a", 1000, args.workers, shard, args.executor)
        first["load_after"] = os.getloadavg()
        cpu_note = ", Ray's worker processes not counted" if args.executor == "ray" else ""
        print(f"{args.executor}, workers {args.workers}, batch 1000: {first['seconds']:.1f}s, "
              f"{n / first['seconds']:.0f} rows/s ({n / first['cpu_seconds']:.0f} rows per "
              f"CPU-second{cpu_note}; the machine's load: {os.getloadavg()[0]:.1f}), "
              f"peak {first['peak_mb']:.0f} MB "
              f"(workers {first['worker_peak_mb']:.0f} MB)\n  {first['summary']}\n"
              f"  {first['phases']}")  # fmt: skip
        second, same = None, None
        if not args.no_parity:
            second = run(path, Path(tmp) / "b", 4000, 1, 64 << 20)
            second["load_after"] = os.getloadavg()
            same = second["sha256"] == first["sha256"]
            print(
                f"workers 1, batch 4000, one shard: {second['seconds']:.1f}s, "
                f"{n / second['seconds']:.0f} rows/s ({n / second['cpu_seconds']:.0f} rows "
                f"per CPU-second), peak {second['peak_mb']:.0f} MB; "
                f"parity (same kept rows, byte for byte): {'PASS' if same else 'FAIL'}"
            )
        if args.json:
            settings = {"executor": args.executor, "workers": args.workers, "batch_size": 1000,
                        "shard_bytes": shard}  # fmt: skip
            first.update(settings)
            if second is not None:
                second.update(executor="local", workers=1, batch_size=4000, shard_bytes=64 << 20)
            for r in (first, second):
                if r is not None:
                    r["rows_per_s"] = n / r["seconds"]
                    if args.executor == "local" or r is second:
                        r["rows_per_cpu_s"] = n / r["cpu_seconds"]
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()  # fmt: skip
            out = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "commit": commit, "cpus": os.cpu_count(), "rows": n, "input_mb": size / 1e6,
                   "load_before": load_before, "runs": [r for r in (first, second) if r],
                   "parity": None if same is None else ("PASS" if same else "FAIL")}  # fmt: skip
            args.json.write_text(json.dumps(out, indent=1) + "\n")
        if same is False:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
