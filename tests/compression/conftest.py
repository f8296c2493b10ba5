"""Compressors over the real SmolLM2 scorer (bf16, as the service runs it on CPU)."""

from __future__ import annotations

import json

import pytest

from compression import METHODS, get_compressor


@pytest.fixture(scope="session")
def fast_scorer(provider):
    return provider.scorer(dtype="bfloat16")


@pytest.fixture(scope="session")
def compressors(fast_scorer, counter):
    return {name: get_compressor(name, scorer=fast_scorer, counter=counter) for name in METHODS}


@pytest.fixture(scope="session")
def stories(data_dir):
    return [json.loads(line) for line in (data_dir / "longqa_small.jsonl").open()]
