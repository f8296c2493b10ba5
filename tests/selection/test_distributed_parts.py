"""The pieces that let a job run spread out keep the answer of one pass over all rows.

The distributed top-k, the connected components of a shuffle's edges, the Gumbel noise a
shard draws for its own rows, the report's mergeable statistics and the output parts, each
against the in-memory rule it stands in for.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selection_helpers import read_jsonl, write_jsonl

from thresher import selection
from thresher.selection.dedup import components
from thresher.selection.dsir import HashedNgramDSIR
from thresher.selection.ranking import top_indices
from thresher.selection.summary import ScoreSketch, ShardSummary


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)),
                                    max_size=80))  # fmt: skip
def test_components_match_a_union_find(n, pairs):
    edges = np.array([(a % n, b % n) for a, b in pairs], dtype=np.int64).reshape(-1, 2)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in edges.tolist():
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    assert components(edges, n).tolist() == [find(i) for i in range(n)]


def test_a_shard_draws_the_gumbel_noise_one_draw_over_all_rows_gives():
    model = HashedNgramDSIR()
    weights = np.random.default_rng(1).normal(size=1000)
    whole = model.resample_keys(weights, 1, 0, 1000, method="gumbel", seed=7)
    parts = [model.resample_keys(weights[a:b], 1, a, 1000, method="gumbel", seed=7)
             for a, b in ((0, 1), (1, 333), (333, 1000))]  # fmt: skip
    assert np.array_equal(np.concatenate(parts), whole)
    rng = np.random.default_rng(7)
    rng.gumbel(size=1000)  # column 0's draws come first
    assert np.array_equal(whole, weights + rng.gumbel(size=1000))


def test_top_indices_breaks_ties_by_position():
    keys = np.array([1.0, 3.0, 3.0, np.nan, 3.0, -np.inf, 2.0])
    assert top_indices(keys, 2).tolist() == [1, 2]
    assert top_indices(keys, 4).tolist() == [1, 2, 4, 6]
    eligible = np.array([True, False, True, True, True, True, True])
    assert top_indices(keys, 6, eligible).tolist() == [0, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("k", [1, 37, 400, 2999, 5000])
def test_top_k_over_many_shards_is_one_stable_sort(tmp_path, raw_path, k):
    """Lengths in words tie often: the cut lands inside a tie and takes its earliest rows."""
    recipe = {
        "inputs": [str(raw_path)], "shard_bytes": 40_000, "batch_size": 128,
        "steps": [{"type": "length"}, {"type": "top_k", "score": "length", "k": k}],
    }  # fmt: skip
    result = selection.run_recipe(recipe, tmp_path / "job", progress=False)
    rows = read_jsonl(raw_path)
    lengths = np.array([len(r["text"].split()) for r in rows], dtype=float)
    expected = sorted(np.argsort(-lengths, kind="stable")[:k].tolist())
    assert [r["id"] for r in read_jsonl(result.output_path)] == [rows[i]["id"] for i in expected]


def test_separate_targets_select_the_same_rows_however_sharded(tmp_path, raw_path, target_path):
    speeches = [r for r in read_jsonl(raw_path) if r["source"] == "political_speeches"][:60]
    other = write_jsonl(tmp_path / "speeches.jsonl", speeches)
    recipe = {
        "inputs": [str(raw_path)], "seed": 3,
        "steps": [{"type": "dsir", "target": [str(target_path), str(other)], "num": 301,
                   "target_mode": "separate", "proportions": [2, 1]}],
    }  # fmt: skip
    one = selection.run_recipe(recipe, tmp_path / "one", progress=False)
    many = selection.run_recipe({**recipe, "shard_bytes": 30_000, "batch_size": 97,
                                 "workers": 2}, tmp_path / "many", progress=False)  # fmt: skip
    assert len(read_jsonl(one.output_path)) == 301
    assert one.output_path.read_bytes() == many.output_path.read_bytes()


def test_score_sketches_merge_and_stay_within_a_bucket():
    values = np.random.default_rng(2).lognormal(size=5000)
    kept = values > 1.5
    whole, parts = ScoreSketch(), ScoreSketch()
    whole.add(values, kept)
    for lo in range(0, 5000, 700):
        part = ScoreSketch()
        part.add(values[lo : lo + 700], kept[lo : lo + 700])
        parts.merge(part)
    assert parts.kept == whole.kept and parts.dropped == whole.dropped
    assert (parts.count, parts.lo, parts.hi) == (5000, values.min(), values.max())
    assert parts.quantile(0.5) == pytest.approx(np.median(values), rel=1 / 128)
    edges, k, d = parts.histogram(40)
    assert k.sum() == kept.sum() and d.sum() == (~kept).sum() and len(edges) == 41


def test_summaries_merge_in_shard_order_like_one_pass():
    pos = np.arange(10)
    steps = np.array([-1, 0, 0, 1, -1, 0, 1, 1, -1, 0], dtype=np.int16)
    why = np.array([None, "a: 1", "b: 2", "x", None, "a: 3", "x", "y", None, "a: 1"], object)
    whole = ShardSummary()
    whole.count_rows(pos, steps, why)
    merged = ShardSummary()
    for lo, hi in ((0, 3), (3, 7), (7, 10)):
        part = ShardSummary()
        part.count_rows(pos[lo:hi], steps[lo:hi], why[lo:hi])
        merged.merge(ShardSummary.from_json(json.loads(json.dumps(part.to_json()))),
                     {"kept": 5, "dropped": 3})  # fmt: skip
    for step in (0, 1):
        assert merged.top_reasons(step, 20) == whole.top_reasons(step, 20)
        assert merged.step_rules(step) == whole.step_rules(step)
    assert list(merged.top_reasons(0, 20)) == ["a: 1", "b: 2", "a: 3"]  # ties: seen first
    assert (merged.rows, merged.kept, merged.dropped) == (10, 3, {0: 4, 1: 3})


@pytest.mark.parametrize("fmt", ["jsonl.gz", "parquet"])
def test_sharded_parts_hold_the_rows_of_the_single_file(tmp_path, alpaca_path, fmt):
    import pyarrow.parquet as pq

    recipe = {"inputs": [str(alpaca_path)], "shard_bytes": 20_000,
              "steps": [{"type": "length"}, {"type": "threshold", "score": "length", "min": 20}],
              "output": {"path": f"kept.{fmt}"}}  # fmt: skip
    single = selection.run_recipe(recipe, tmp_path / "single", progress=False)
    recipe["output"] = {"path": f"kept.{fmt}", "sharded": True}
    parts = selection.run_recipe(recipe, tmp_path / "parts", progress=False)
    files = sorted(parts.output_path.glob("part-*"))
    assert len(files) > 2 and parts.output_path.name == "kept"
    if fmt == "parquet":
        joined = [r for f in files for r in pq.read_table(f).to_pylist()]
        assert joined == pq.read_table(single.output_path).to_pylist()
    else:
        assert b"".join(f.read_bytes() for f in files) == single.output_path.read_bytes()
    manifest = json.loads(parts.manifest_path.read_text())
    assert sum(p["rows"] for p in manifest["files"]["kept"]) == single.report.rows_kept
