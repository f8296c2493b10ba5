"""Compressors over the real models, in the dtype the service runs them in on this machine."""

from __future__ import annotations

import json

import pytest

from thresher.compression import METHODS, load_compressor


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
    """The scoring LM as compression runs it here (bf16 only where the CPU has it natively)."""
    return provider.compression_scorer()


@pytest.fixture(scope="session")
def classifier(provider):
    """Thresher's embedded LLMLingua-2 classifier, loaded once."""
    return provider.token_classifier()


@pytest.fixture(scope="session")
def compressors(provider, counter):
    """Every method over the models the service gives it (load_compressor)."""
    return {name: load_compressor(name, provider, counter=counter) for name in METHODS}


@pytest.fixture(scope="session")
def stories(data_dir):
    return [json.loads(line) for line in (data_dir / "longqa_small.jsonl").open()]
