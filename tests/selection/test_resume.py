"""A job killed with SIGKILL and started again finishes exactly like an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from selection_helpers import read_jsonl

REPO = Path(__file__).resolve().parents[2]


def write_recipe(folder: Path, raw: Path, target: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(
        f"inputs: ['{raw}']\n"
        "batch_size: 25\n"
        "shard_bytes: 200000\n"
        "seed: 7\n"
        "steps:\n"
        "  - {type: length}\n"
        "  - {type: threshold, score: length, min: 4}\n"
        f"  - {{type: dsir, target: ['{target}'], num: 300}}\n"
    )
    return path


def select(recipe: Path, out: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "thresher", "select", str(recipe), "--out", str(out),
         "--no-progress"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.parametrize(("folder", "batches"), [("pass-0", 15), ("pass-1", 10)])
def test_sigkill_then_restart_matches_an_uninterrupted_run(
    tmp_path, raw_path, target_path, folder, batches
):
    recipe = write_recipe(tmp_path, raw_path, target_path)
    reference = select(recipe, tmp_path / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    out = tmp_path / "killed"
    job = select(recipe, out)
    watched = out / ".work" / folder
    deadline = time.time() + 120
    while time.time() < deadline and job.poll() is None:
        if watched.is_dir() and len(list(watched.glob("*.npz"))) >= batches:
            break
        time.sleep(0.005)
    assert job.poll() is None, "the job finished before it could be killed"
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL
    assert not (out / "selected.jsonl").exists()  # nothing half-written under the final name

    again = select(recipe, out)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    expected = (tmp_path / "reference" / "selected.jsonl").read_bytes()
    assert (out / "selected.jsonl").read_bytes() == expected
    rows = read_jsonl(out / "selected.jsonl")
    assert len(rows) == 300 and len({r["id"] for r in rows}) == 300
    assert "kept 300" in stdout and "resumed" in stdout
