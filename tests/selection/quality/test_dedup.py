from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.core.errors import ConfigError
from thresher.core.record import Record
from thresher.selection.dedup import Deduplicator
from thresher.selection.diversity import DiverseSubset, kcenter_greedy


def _pairs(labels, kind):
    return [(i, row["duplicate_of"]) for i, row in labels.items() if row["defect"] == kind]


@pytest.mark.parametrize(("method", "kind"), [("exact", "exact_duplicate"),
                                              ("minhash", "near_duplicate")])  # fmt: skip
def test_one_copy_of_each_seeded_duplicate_pair_survives(records, labels, method, kind):
    result = Deduplicator(method=method).decide(records)
    kept = {r.id for r, k in zip(records, result.keep, strict=True) if k}
    for copy, original in _pairs(labels, kind):
        assert (copy in kept) != (original in kept), (copy, original)
    for why, dup in zip(result.reasons, result.duplicate_of, strict=True):
        if why is not None:
            assert dup in kept and dup in why


def test_near_duplicates_keep_the_cleaner_copy(records, labels):
    result = Deduplicator(method="minhash").decide(records)
    kept = {r.id for r, k in zip(records, result.keep, strict=True) if k}
    pairs = _pairs(labels, "near_duplicate")
    assert sum(original in kept for _, original in pairs) >= len(pairs) - 1


def test_semantic_dedup_clusters_paraphrases(embedder):
    texts = ["How do I bake bread at home?", "How can I bake bread at home?",
             "What is the boiling point of water?"]  # fmt: skip
    rows = [Record(str(i), text=t) for i, t in enumerate(texts)]
    kept = Deduplicator(method="semantic", threshold=0.9, embedder=embedder).select(rows)
    assert [r.id for r in kept] == ["0", "2"]


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="threshold"):
        Deduplicator(threshold=1.5)
    with pytest.raises(ConfigError, match="embedder"):
        Deduplicator(method="semantic")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["a b c d", "a b c e", "x y z w", "p q r s t"]), max_size=12))
def test_exact_dedup_keeps_one_row_per_distinct_text(texts):
    rows = [Record(str(i), text=t) for i, t in enumerate(texts)]
    kept = Deduplicator(method="exact", prefer="first").select(rows)
    assert sorted(r.text for r in kept) == sorted(set(texts))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 10), st.integers(0, 2**31))
def test_kcenter_returns_at_most_k_unique_rows(n, k, seed):
    v = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    picked = kcenter_greedy(v, k)
    assert len(picked) == min(n, k) == len(set(picked.tolist()))


@pytest.mark.parametrize("strategy", ["kcenter", "score_first"])
def test_diverse_subset_spreads_over_topics(embedder, strategy):
    texts = ["Bake bread with flour.", "Bake a loaf of bread.", "Knead dough for bread.",
             "The stock market fell today.", "Shares dropped on Wall Street."]  # fmt: skip
    rows = [Record(str(i), text=t, scores={"q": float(i)}) for i, t in enumerate(texts)]
    kept = DiverseSubset(embedder, budget=2, strategy=strategy, score="q", min_distance=0.7)
    ids = {r.id for r in kept.select(rows)}
    assert len(ids) == 2 and ids & {"0", "1", "2"} and ids & {"3", "4"}


def test_streaming_dedup_in_small_batches_names_the_kept_id(tmp_path, instructions_path, labels):
    import json

    from thresher import selection

    recipe = {
        "inputs": [{"path": str(instructions_path), "shape": "alpaca"}],
        "steps": [{"type": "dedup", "name": "exact", "method": "exact", "prefer": "first"},
                  {"type": "dedup", "name": "near", "method": "minhash"}],
        "output": {"path": str(tmp_path / "kept.jsonl"), "write_dropped": True},
        "batch_size": 150,  # boilerplate (templates) is judged per batch: enough rows to see it
    }  # fmt: skip
    result = selection.run_recipe(recipe, tmp_path / "job", progress=False)
    kept = {json.loads(line)["id"] for line in result.output_path.read_text().splitlines()}
    for copy, row in labels.items():
        if "duplicate" in row["defect"]:
            assert (copy in kept) != (row["duplicate_of"] in kept), copy
    for line in result.dropped_path.read_text().splitlines():
        reason = json.loads(line)["reason"]
        assert reason.split(" duplicate of ")[1] in kept
