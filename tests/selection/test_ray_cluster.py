"""Jobs on a real two-node Ray cluster keep exactly the rows the local executor keeps.

The cluster is two ``ray start`` raylets on this machine (see ``ray_cluster.py``); each job's
driver connects to its address, ships its code, and its tasks run on both nodes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from selection_helpers import read_jsonl, write_jsonl

from thresher import selection
from thresher.selection.recipes import builtin_recipe

pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[2]
INSTRUCTIONS = REPO / "tests" / "data" / "quality" / "instructions_small.jsonl"


def instruction_rows(copies: int = 6, seed: int = 3) -> list[dict]:
    """The seeded-defect instruction rows, then copies of them: exact copies of every
    seventh row, near copies (one word of a long input changed) of every third, and copies
    with a third of their words swapped (neither), so duplicates sit in other shards than
    their originals."""
    rows = [json.loads(line) for line in INSTRUCTIONS.read_text(encoding="utf-8").splitlines()]
    rng = random.Random(seed)
    vocab = sorted({w for r in rows for w in r["output"].split()})
    out = list(rows)
    for copy in range(1, copies):
        for i, row in enumerate(rows):
            new = {**row, "id": f"{row['id']}-v{copy}"}
            if copy == 1 and i % 7 == 0:
                pass  # an exact duplicate
            elif copy == 2 and i % 3 == 0 and len(row["input"].split()) > 40:
                words = row["input"].split(" ")
                words[len(words) // 2] = rng.choice(vocab)
                new["input"] = " ".join(words)
            else:
                for field in ("input", "output"):
                    new[field] = " ".join(rng.choice(vocab) if w and rng.random() < 0.33 else w
                                          for w in row[field].split(" "))  # fmt: skip
            out.append(new)
    return out


def default_recipe(path: Path, **settings) -> dict:
    recipe = builtin_recipe("instruction-quality")
    recipe["inputs"] = [{"path": str(path), "shape": "auto"}]
    recipe["output"] = {"path": "kept.jsonl", "write_dropped": True}
    recipe.update({"batch_size": 100, "shard_bytes": 400_000, **settings})
    return recipe


@pytest.fixture(scope="module")
def instructions(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("rows") / "rows.jsonl", instruction_rows())


@pytest.fixture(scope="module")
def local_default(tmp_path_factory, instructions):
    return selection.run_recipe(default_recipe(instructions), tmp_path_factory.mktemp("local"),
                                progress=False)  # fmt: skip


def test_the_default_recipe_on_two_nodes_keeps_the_local_rows(
    tmp_path, instructions, local_default, ray_cluster
):
    """Sharded output: each shard's task wrote its parts, which join into the local files."""
    recipe = default_recipe(instructions)
    recipe["output"] = {"path": "kept.jsonl", "write_dropped": True, "sharded": True}
    result = selection.run_recipe(recipe, tmp_path / "ray", executor="ray",
                                  address=ray_cluster.address, progress=False)  # fmt: skip
    report = result.report
    assert report.rows_read == 2190 and report.rows_kept == local_default.report.rows_kept
    for step, least in (("exact_dedup", 40), ("near_dedup", 30)):  # copies in other shards
        counts = {s.name: s for s in report.steps}[step]
        assert counts.rows_in - counts.rows_out >= least
    assert [s.__dict__ for s in report.steps] == [s.__dict__ for s in local_default.report.steps]
    manifest = json.loads(result.manifest_path.read_text())
    local = {"kept": local_default.output_path, "dropped": local_default.dropped_path}
    for kind in ("kept", "dropped"):
        parts = manifest["files"][kind]
        names = [f"{kind}/part-{i:05d}.jsonl" for i in range(len(parts))]
        assert [p["path"] for p in parts] == names and len(parts) > 3
        joined = b"".join((tmp_path / "ray" / p["path"]).read_bytes() for p in parts)
        assert joined == local[kind].read_bytes()
    assert result.output_path == tmp_path / "ray" / "kept"
    assert report.driver_peak_mb > 0 and report.worker_peak_mb > 0
    assert "peak memory: driver" in result.summary()


def test_a_dsir_recipe_selects_the_local_rows(tmp_path, raw_path, target_path, ray_cluster):
    recipe = {
        "inputs": [str(raw_path)],
        "batch_size": 400,
        "shard_bytes": 250_000,  # several shards inside the one file
        "seed": 11,
        "steps": [
            {"type": "length"},
            {"type": "threshold", "score": "length", "min": 5},
            {"type": "dsir", "target": [str(target_path)], "num": 200},
            {"type": "top_k", "score": "length", "k": 150},
        ],
    }
    local = selection.run_recipe(recipe, tmp_path / "local", progress=False)
    on_ray = selection.run_recipe(recipe, tmp_path / "ray", executor="ray",
                                  address=ray_cluster.address, progress=False)  # fmt: skip
    assert len(read_jsonl(local.output_path)) == 150
    assert on_ray.output_path.read_bytes() == local.output_path.read_bytes()
    assert [s.__dict__ for s in on_ray.report.steps] == [s.__dict__ for s in local.report.steps]
    assert on_ray.report.metrics["dsir"] == pytest.approx(local.report.metrics["dsir"])


def test_a_bad_row_under_strict_is_the_same_error_on_ray(tmp_path, raw_path, ray_cluster):
    from thresher.core.errors import InputError

    lines = raw_path.read_bytes().splitlines(keepends=True)[:50]
    lines[9] = b"{not json\n"
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(b"".join(lines))
    recipe = {"inputs": [str(damaged)], "steps": [{"type": "length"}], "strict": True}
    run = {"executor": "ray", "address": ray_cluster.address, "progress": False}
    with pytest.raises(InputError, match=f"{damaged}:10:"):
        selection.run_recipe(recipe, tmp_path / "job", **run)
    relaxed = selection.run_recipe(recipe, tmp_path / "job", strict=False, **run)
    assert relaxed.report.rejects == 1 and relaxed.report.rows_read == 49


def _select(recipe: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "thresher", "select", str(recipe), "--out", str(out),
         "--executor", "ray", "--no-progress", *extra],
        cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_killed_driver_resumes_on_the_cluster(
    tmp_path, instructions, local_default, ray_cluster
):
    """Through the CLI: RAY_ADDRESS names the cluster (the issue's failing command), the
    driver is killed mid-job, and ``--address`` resumes it to the same rows."""
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(default_recipe(instructions)))
    job = _select(path, tmp_path / "job", env={"RAY_ADDRESS": ray_cluster.address})
    watched = tmp_path / "job" / ".work" / "pass-1"
    deadline = time.time() + 240
    while time.time() < deadline and job.poll() is None:
        if len(list(watched.glob("shard-*.npz"))) >= 2:
            break
        time.sleep(0.05)
    assert job.poll() is None, job.communicate()
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert not (tmp_path / "job" / "kept.jsonl").exists()
    again = _select(path, tmp_path / "job", "--address", ray_cluster.address)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert "resumed" in stdout
    assert (tmp_path / "job" / "kept.jsonl").read_bytes() == local_default.output_path.read_bytes()


def test_a_worker_node_dies_mid_job_and_the_rows_are_the_same(
    tmp_path, instructions, local_default, ray_cluster
):
    """The cluster's second node is killed (every process of it) while the job runs on both;
    Ray runs its tasks again on the head and the job ends with the same rows. (The last test
    of the session's cluster: a node is started again, for good measure.)"""
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(default_recipe(instructions, batch_size=25)))
    job = _select(path, tmp_path / "job", "--address", ray_cluster.address)
    watched = tmp_path / "job" / ".work" / "pass-1"
    deadline = time.time() + 240
    while time.time() < deadline and job.poll() is None:
        # Two shards half done (batches checkpointed, no state yet): both nodes are busy.
        started = {p.name[:5] for p in watched.glob("[0-9]*-*.npz")}
        if len(started - {p.stem[6:] for p in watched.glob("shard-*.npz")}) >= 2:
            break
        time.sleep(0.02)
    assert job.poll() is None, job.communicate()
    try:
        ray_cluster.kill_node(1)
        stdout, stderr = job.communicate(timeout=300)
    finally:
        ray_cluster.add_node()
    assert job.returncode == 0, stderr
    assert (tmp_path / "job" / "kept.jsonl").read_bytes() == local_default.output_path.read_bytes()
