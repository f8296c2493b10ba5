"""Compressors over the real SmolLM2 scorer (bf16, as the service runs it on CPU)."""

from __future__ import annotations

import json

import pytest

from thresher.compression import CLASSIFIER_METHODS, METHODS, get_compressor


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    # These tests make many small forward passes; on a shared 2-core machine two torch threads
    # contend with the other processes and run several times slower than one (measured: 814
    # tokens in 1.7 s with one thread against 11-21 s with two at load 3).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fast_scorer(provider):
    return provider.scorer(dtype="bfloat16")


@pytest.fixture(scope="session")
def classifier(provider):
    """Thresher's embedded LLMLingua-2 classifier, loaded once."""
    return provider.token_classifier()


@pytest.fixture(scope="session")
def compressors(fast_scorer, classifier, embedder, counter):
    def build(name):
        if name in CLASSIFIER_METHODS:
            return get_compressor(name, scorer=classifier, counter=counter, embedder=embedder)
        return get_compressor(name, scorer=fast_scorer, counter=counter)

    return {name: build(name) for name in METHODS}


@pytest.fixture(scope="session")
def stories(data_dir):
    return [json.loads(line) for line in (data_dir / "longqa_small.jsonl").open()]
