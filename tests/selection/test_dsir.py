import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from selection_helpers import read_jsonl

from thresher import selection
from thresher.selection.dsir import HashedNgramDSIR, hashed_ngrams, smoothed

texts = st.lists(st.text(max_size=60), min_size=1, max_size=8)


def features(text, **kw):
    f = hashed_ngrams([text], **kw)
    return np.bincount(f.bucket, minlength=kw.get("buckets", 10000))


@settings(max_examples=60, deadline=None)
@given(texts)
def test_batching_does_not_change_a_documents_features(batch):
    together = hashed_ngrams(batch, ngrams=3, buckets=997)
    for i, text in enumerate(batch):
        alone = hashed_ngrams([text], ngrams=3, buckets=997)
        assert sorted(together.bucket[together.doc == i]) == sorted(alone.bucket)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=1, max_size=12))
def test_ngram_counts_follow_the_token_count(words):
    text = " ".join(words)
    for n in (1, 2, 3):
        f = hashed_ngrams([text], ngrams=n, buckets=1 << 20)
        t = len(words)
        assert len(f.bucket) == sum(max(0, t - k + 1) for k in range(1, n + 1))


def test_tokenisation_is_lowercase_word_punct():
    a = features("Hello, WORLD!  hello", buckets=1 << 30)
    b = features("hello ,world ! HELLO", buckets=1 << 30)
    assert (a == b).all()
    assert a.sum() == 5 + 4  # hello , world ! hello: five tokens, four bigrams
    assert (
        features("hello world", buckets=1 << 30) != features("world hello", buckets=1 << 30)
    ).any()


def test_smoothing_is_laplace():
    p = smoothed(np.array([0.0, 1.0, 3.0]), 1.0)
    assert np.allclose(p, [1 / 7, 2 / 7, 4 / 7])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 300),
    st.integers(0, 400),
    st.sampled_from(["gumbel", "topk"]),
    st.integers(0, 2**31),
)
def test_resample_returns_at_most_k_unique_sorted_rows(n, k, method, seed):
    model = HashedNgramDSIR().fit_target([np.ones(10000)]).fit_raw(np.ones(10000))
    weights = np.random.default_rng(seed).normal(size=n)
    chosen = model.resample(weights, k, method=method, seed=seed)
    assert len(chosen) == min(k, n) and len(set(chosen)) == len(chosen)
    assert (np.diff(chosen) > 0).all() and (chosen < n).all()


def test_topk_takes_the_largest_and_gumbel_follows_the_weights():
    model = HashedNgramDSIR().fit_target([np.ones(10000)]).fit_raw(np.ones(10000))
    w = np.log(np.r_[np.full(100, 9.0), np.full(900, 1.0)])
    assert (model.resample(w, 100, method="topk") == np.arange(100)).all()
    # Sampling 100 of 1000 rows where the first 100 weigh 9x: about half the draws land there.
    hits = [np.sum(model.resample(w, 100, seed=s) < 100) for s in range(30)]
    assert 35 < np.mean(hits) < 65


def test_dsir_selects_reviews_and_reduces_kl(tmp_path, raw_path, target_path):
    recipe = {
        "inputs": [str(raw_path)],
        "steps": [{"type": "dsir", "target": [str(target_path)], "num": 150}],
    }
    result = selection.run_recipe(recipe, tmp_path, progress=False)
    kept = read_jsonl(result.output_path)
    sources = collections.Counter(r["source"] for r in kept)
    pool = collections.Counter(r["source"] for r in read_jsonl(raw_path))
    assert len(kept) == 150
    assert sources["amazon_fine_food"] / 150 > 0.9 > pool["amazon_fine_food"] / 3000
    metrics = result.report.metrics["dsir"]
    assert metrics["kl_reduction"] > 0
    assert metrics["kl_target_selected"] < metrics["kl_target_raw"]
    assert all(np.isfinite(r["thresher"]["dsir"]) for r in kept)


def test_same_seed_same_rows_other_seed_other_rows(tmp_path, raw_path, target_path):
    def run(seed, name):
        recipe = {
            "inputs": [str(raw_path)],
            "seed": seed,
            "steps": [{"type": "dsir", "target": [str(target_path)], "fraction": 0.1}],
        }
        out = selection.run_recipe(recipe, tmp_path / name, progress=False).output_path
        return [r["id"] for r in read_jsonl(out)]

    assert run(1, "a") == run(1, "b")
    assert run(1, "a") != run(2, "c")


def test_several_targets_with_proportions(tmp_path, raw_path, target_path):
    speeches = [r for r in read_jsonl(raw_path) if r["source"] == "political_speeches"][:40]
    from selection_helpers import write_jsonl

    speech_target = write_jsonl(tmp_path / "speeches.jsonl", speeches)
    recipe = {
        "inputs": [str(raw_path)],
        "steps": [
            {
                "type": "dsir",
                "target": [str(target_path), str(speech_target)],
                "proportions": [0.75, 0.25],
                "num": 80,
                "target_mode": "separate",
                "method": "topk",
            }
        ],
    }
    result = selection.run_recipe(recipe, tmp_path / "job", progress=False)
    sources = collections.Counter(r["source"] for r in read_jsonl(result.output_path))
    assert sum(sources.values()) == 80
    assert sources["amazon_fine_food"] >= 55 and sources["political_speeches"] >= 15
    assert set(result.report.score_summary) == {"dsir", "dsir.target_small", "dsir.speeches"}


def test_model_persists_as_arrays_and_json(tmp_path):
    model = HashedNgramDSIR(ngrams=2, buckets=64).fit_target([np.arange(64.0)])
    model.fit_raw(np.arange(64.0)[::-1])
    model.save(tmp_path / "m")
    again = HashedNgramDSIR.load(tmp_path / "m")
    texts = ["a review of tea", "the senate voted"]
    assert np.allclose(model.log_weights(texts), again.log_weights(texts))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["dsir.json", "dsir.npz"]


def test_missing_target_names_the_field(tmp_path, raw_path):
    from thresher.core.errors import NotFoundError

    recipe = {
        "inputs": [str(raw_path)],
        "steps": [{"type": "dsir", "target": [str(tmp_path / "none.jsonl")], "num": 3}],
    }
    with pytest.raises(NotFoundError, match="none.jsonl") as info:
        selection.run_recipe(recipe, tmp_path / "job", progress=False)
    assert info.value.field == "steps[0].target"
