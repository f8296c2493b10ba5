"""CLI, Python and the recipe file agree; the CLI prints progress and a summary line."""

import subprocess
import sys
from pathlib import Path

import pytest
from selection_helpers import read_jsonl

from thresher import selection

REPO = Path(__file__).resolve().parents[2]


def test_dsir_cli_matches_the_python_call(tmp_path, raw_path, target_path):
    out = tmp_path / "cli" / "picked.jsonl"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "thresher",
            "dsir",
            "--raw",
            str(raw_path),
            "--target",
            str(target_path),
            "--num",
            "120",
            "--out",
            str(out),
            "--seed",
            "3",
            "--buckets",
            "5000",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    summary = run.stdout.strip().splitlines()[-1]
    assert summary.startswith("read 3000") and "kept 120" in summary and "kl_reduction" in summary
    assert "rows" in run.stderr  # tqdm progress bars went to stderr

    recipe = {
        "inputs": [{"path": str(raw_path), "shape": "text"}],
        "steps": [
            {
                "type": "dsir",
                "target": [{"path": str(target_path), "shape": "text"}],
                "num": 120,
                "buckets": 5000,
            }
        ],
        "output": {"path": "picked.jsonl"},
        "seed": 3,
    }
    result = selection.run_recipe(recipe, tmp_path / "py", progress=False)
    assert [r["id"] for r in read_jsonl(result.output_path)] == [r["id"] for r in read_jsonl(out)]
    assert result.output_path.read_bytes() == out.read_bytes()


def test_select_cli_runs_a_recipe_file(tmp_path, raw_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"inputs: ['{raw_path}']\nsteps:\n  - {{type: length, unit: chars}}\n"
        "  - {type: threshold, score: length, min: 200, max: 400}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "thresher", "select", str(recipe)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    kept = read_jsonl(tmp_path / "r.out" / "selected.jsonl")
    assert kept and all(200 <= len(r["text"]) <= 400 for r in kept)
    assert f"kept {len(kept)}" in run.stdout and "threshold dropped" in run.stdout


def test_fresh_starts_over_and_a_changed_recipe_is_refused(tmp_path, raw_path):
    from thresher.core.errors import ConfigError

    base = {
        "inputs": [str(raw_path)],
        "steps": [{"type": "length"}, {"type": "top_k", "score": "length", "k": 3}],
    }
    first = selection.run_recipe(base, tmp_path, progress=False, keep_work=True)
    assert not first.resumed
    assert selection.run_recipe(base, tmp_path, progress=False, keep_work=True).resumed
    changed = {**base, "steps": [{"type": "length"}, {"type": "top_k", "score": "length", "k": 4}]}
    try:
        selection.run_recipe(changed, tmp_path, progress=False, keep_work=True)
    except ConfigError as exc:
        assert exc.field == "output_dir" and "--fresh" in str(exc)
    else:
        raise AssertionError("a different recipe reused the folder")
    again = selection.run_recipe(changed, tmp_path, progress=False, fresh=True, keep_work=True)
    assert len(read_jsonl(again.output_path)) == 4 and not again.resumed


def test_commands_have_help():
    for command in ("select", "dsir"):
        run = subprocess.run(
            [sys.executable, "-m", "thresher", command, "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0 and "Usage" in run.stdout, run.stderr


def thresher(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "thresher", *args, "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )


def test_filter_keeps_the_same_rows_with_two_workers_and_cleans_up(tmp_path):
    source = REPO / "tests" / "data" / "quality" / "instructions_small.jsonl"
    one = thresher("filter", "--input", str(source), "--out", str(tmp_path / "one.jsonl"))
    two = thresher(
        "filter", "--input", str(source), "--out", str(tmp_path / "two.jsonl"), "--workers", "2"
    )
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()
    assert "rules dropped" in one.stdout and "non_answer" in one.stdout  # counts per rule
    assert not (tmp_path / "one.jsonl.thresher" / ".work").exists()


def test_filter_on_an_empty_file_is_one_line_exit_2(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    run = thresher("filter", "--input", str(empty), "--out", str(tmp_path / "out.jsonl"))
    assert run.returncode == 2
    assert "empty.jsonl" in run.stderr and "Traceback" not in run.stderr


def test_a_cluster_address_is_checked_before_any_work(tmp_path, raw_path):
    """Usage errors of --address are one line and exit 2: with the local executor, and a
    Ray cluster that does not answer (found at once, not after Ray's minutes of retries)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"inputs: ['{raw_path}']\nsteps:\n  - {{type: length}}\n")
    local = thresher("select", str(recipe), "--address", "127.0.0.1:6379")
    assert local.returncode == 2 and "executor 'ray'" in local.stderr
    assert "Traceback" not in local.stderr
    pytest.importorskip("ray")
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = thresher("select", str(recipe), "--executor", "ray", "--address", f"127.0.0.1:{port}")
    assert dead.returncode == 2 and f"127.0.0.1:{port}" in dead.stderr
    assert "Traceback" not in dead.stderr
