"""Throughput of the default `instruction-quality` recipe end to end, with a parity check.

Builds N Alpaca rows (100,000 by default) from ../shared/data/instructions.jsonl: the pool once
as it is, then perturbed copies (about a third of the words of input and output swapped for other
words of the pool, so copies are neither exact nor near duplicates of each other). Each job runs
in its own process, which reports wall time, rows per second and peak memory (the driver's and
the largest worker's, from the job's report); then a second run with other batch, shard and
settings on the local executor (batch 4000, shards of 64 MB) must keep exactly the same rows (the
parity check).

    python bench/selection_throughput.py [--rows 100000] [--workers 2] [--smoke]
        [--executor local|ray] [--nodes 1 2 4] [--sharded] [--input rows.jsonl]
        [--json results.json]

``--executor ray --nodes N ...`` starts, for each N, a Ray cluster of N single-CPU nodes on this
machine (``ray start``, as tests/selection/ray_cluster.py does), runs the job on it, and reports
the scaling curve: wall seconds, the serial seconds (what is not a map stage), the map stages'
rows per task-second (one worker's speed), and T(w) = serial + parallel / w fitted to the runs.
``--input`` keeps the generated rows in a file and reuses them (large runs take a while to
build). ``--json`` writes every run's numbers, the parity verdict, the machine's load and the
code's commit.
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

from thresher.core.files import atomic_path

ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, n: int, seed: int = 5) -> None:
    rows = [json.loads(line) for line in open(shared_data() / "instructions.jsonl", "rb")]
    rng = random.Random(seed)
    vocab = sorted({w for r in rows[:2000] for w in r["output"].split()})
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
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


def digest(result) -> str:  # noqa: ANN001
    """sha256 of the kept rows (the parts in order, for sharded output)."""
    h = hashlib.sha256()
    path = result.output_path
    for part in sorted(path.glob("part-*")) if path.is_dir() else [path]:
        with open(part, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()[:16]


def child(args: argparse.Namespace) -> None:
    from thresher import selection
    from thresher.selection.recipes import builtin_recipe

    recipe = builtin_recipe("instruction-quality")
    recipe["inputs"] = [{"path": str(args.input), "shape": "alpaca"}]
    recipe["output"] = {"path": "kept.jsonl", "scores": "inline", "sharded": args.sharded}
    recipe.update(batch_size=args.batch_size, workers=args.workers, shard_bytes=args.shard_bytes)
    start = time.perf_counter()
    result = selection.run_recipe(recipe, args.job, executor=args.executor,
                                  address=args.address, fresh=True, progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    report = result.report
    maps = [p for p in report.phases if p.kind == "map" and p.task_seconds]
    print(json.dumps({
        "seconds": seconds, "rows": report.rows_read, "kept": report.rows_kept,
        "driver_peak_mb": report.driver_peak_mb, "worker_peak_mb": report.worker_peak_mb,
        "process_peak_mb": me.ru_maxrss / 1024, "sha256": digest(result), "cpu_seconds": cpu,
        "serial_seconds": report.serial_seconds,
        "map_seconds": sum(p.seconds for p in maps),
        "map_rows_per_task_second": sum(p.rows for p in maps) / max(1e-9, sum(
            p.task_seconds for p in maps)),
        "summary": result.summary(),
        "phases": [(p.name, p.kind, round(p.seconds, 2), round(p.task_seconds, 2))
                   for p in report.phases],
    }))  # fmt: skip


def run(path: Path, job: Path, batch_size: int, workers: int | None, shard_bytes: int,
        executor: str = "local", address: str | None = None, sharded: bool = False,
        env: dict | None = None) -> dict:  # fmt: skip
    cmd = [sys.executable, __file__, "--child", "--input", str(path), "--job", str(job),
           "--batch-size", str(batch_size), "--shard-bytes", str(shard_bytes),
           "--executor", executor]  # fmt: skip
    cmd += ["--workers", str(workers)] if workers else []
    cmd += ["--address", address] if address else []
    cmd += ["--sharded"] if sharded else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})  # fmt: skip
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def on_cluster(nodes: int, path: Path, job: Path, shard: int, sharded: bool) -> dict:
    """The job on a fresh cluster of ``nodes`` single-CPU Ray nodes on this machine."""
    sys.path.insert(0, str(ROOT / "tests" / "selection"))
    from ray_cluster import ENV, RayCluster

    with tempfile.TemporaryDirectory(prefix="cluster-") as tmp:
        # Raylets start slowly on a busy 2-core machine: a longer wait than the tests'.
        cluster = RayCluster(Path(tmp), nodes=nodes, timeout=600)
        try:
            return run(path, job, 1000, None, shard, "ray", cluster.address, sharded, env=ENV)
        finally:
            cluster.stop()


def describe(name: str, r: dict, n: int) -> str:
    return (f"{name}: {r['seconds']:.1f}s, {n / r['seconds']:.0f} rows/s, serial "
            f"{r['serial_seconds']:.1f}s ({r['serial_seconds'] / r['seconds']:.0%}), map stages "
            f"{r['map_rows_per_task_second']:.0f} rows per task-second, peak memory: driver "
            f"{r['driver_peak_mb']:.0f} MB, largest worker {r['worker_peak_mb']:.0f} MB\n"
            f"  {r['summary']}\n  {r['phases']}")  # fmt: skip


def fit_scaling(runs: list[tuple[int, dict]]) -> tuple[float, float]:
    """Least-squares T(w) = serial + parallel / w over (workers, run) pairs."""
    import numpy as np

    w = np.array([float(k) for k, _ in runs])
    t = np.array([r["seconds"] for _, r in runs])
    a = np.column_stack([np.ones_like(w), 1 / w])
    (serial, parallel), *_ = np.linalg.lstsq(a, t, rcond=None)
    return float(serial), float(parallel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="5,000 rows")
    parser.add_argument("--no-parity", action="store_true")
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="of the first run(s) (the parity run is local, 1 worker)")
    parser.add_argument("--nodes", type=int, nargs="+",
                        help="with --executor ray: run on clusters of this many 1-CPU nodes")
    parser.add_argument("--sharded", action="store_true", help="leave the kept rows in parts")
    parser.add_argument("--input", type=Path, help="keep (or reuse) the generated rows here")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--shard-bytes", type=int, default=64 << 20, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    n = 5000 if args.smoke else args.rows
    with tempfile.TemporaryDirectory() as tmp:
        path = args.input or Path(tmp) / "rows.jsonl"
        if not path.exists() or sum(1 for _ in open(path, "rb")) != n:
            build(path, n)
        size = path.stat().st_size
        workers = max(args.nodes or [args.workers])
        # Enough shards for every worker, and at most 64 MB each (a worker's memory is bounded
        # by its shard, not by the input).
        shard = max(1 << 20, min(64 << 20, size // (4 * workers)))
        print(f"{n} rows, {size / 1e6:.0f} MB, shards of {shard / 1e6:.1f} MB; "
              f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
        load_before = os.getloadavg()
        runs: list[tuple[int, dict]] = []
        for nodes in args.nodes or [args.workers]:
            job = Path(tmp) / f"job-{nodes}"
            if args.executor == "ray" and args.nodes:
                r = on_cluster(nodes, path, job, shard, args.sharded)
                name = f"ray, {nodes} single-CPU nodes"
            else:
                r = run(path, job, 1000, nodes, shard, args.executor, sharded=args.sharded)
                name = f"{args.executor}, workers {nodes}"
            r.update(executor=args.executor, workers=nodes, batch_size=1000, shard_bytes=shard,
                     load_after=os.getloadavg(), rows_per_s=n / r["seconds"])  # fmt: skip
            if args.executor == "local":
                r["rows_per_cpu_s"] = n / r["cpu_seconds"]
                name += f" ({r['rows_per_cpu_s']:.0f} rows per CPU-second)"
            print(describe(name, r, n), flush=True)
            runs.append((nodes, r))
        scaling = None
        if len(runs) > 1:
            serial, parallel = fit_scaling(runs)
            scaling = {"serial": serial, "parallel": parallel}
            walls = [round(r["seconds"], 1) for _, r in runs]
            print(f"T(w) = {serial:.1f}s + {parallel:.1f}s / w over w = "
                  f"{[k for k, _ in runs]} (wall seconds {walls})")
        second, same = None, None
        if not args.no_parity:
            second = run(path, Path(tmp) / "parity", 4000, args.workers, 64 << 20)
            second.update(executor="local", workers=args.workers, batch_size=4000,
                          shard_bytes=64 << 20,
                          load_after=os.getloadavg(), rows_per_s=n / second["seconds"],
                          rows_per_cpu_s=n / second["cpu_seconds"])  # fmt: skip
            same = all(r["sha256"] == second["sha256"] for _, r in runs)
            verdict = "PASS" if same else "FAIL"
            name = f"local, workers {args.workers}, batch 4000, shards of 64 MB"
            print(describe(name, second, n)
                  + f"\nparity (same kept rows, byte for byte): {verdict}")
        if args.json:
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()  # fmt: skip
            out = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "commit": commit, "cpus": os.cpu_count(), "rows": n, "input_mb": size / 1e6,
                   "load_before": load_before, "scaling": scaling,
                   "runs": [r for _, r in runs] + ([second] if second else []),
                   "parity": None if same is None else ("PASS" if same else "FAIL")}  # fmt: skip
            args.json.write_text(json.dumps(out, indent=1) + "\n")
        if same is False:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
