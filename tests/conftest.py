"""Session-wide fixtures: each real model is loaded once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def provider():
    from thresher.core.models import ModelProvider

    # The default cache dir: the converted SmolLM2 folder is made once per machine.
    return ModelProvider(device="auto")


@pytest.fixture(scope="session")
def scorer(provider):
    return provider.scorer()


@pytest.fixture(scope="session")
def embedder(provider):
    return provider.embedder()


@pytest.fixture(scope="session")
def counter(provider):
    return provider.token_counter("cl100k_base")


@pytest.fixture(scope="session")
def local_lm(provider):
    return provider.causal_lm()
