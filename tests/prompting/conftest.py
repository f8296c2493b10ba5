"""Small real pools for the prompting tests, built once per session with the real embedder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from thresher.prompting import Pool, demonstration


def read_rows(data_dir, split: str, n: int) -> list[dict]:
    with open(data_dir / "prompting" / f"intent_{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f][:n]


@pytest.fixture(scope="session")
def intent_records(data_dir):
    return [
        demonstration(r["id"], r["text"], label=r["label"])
        for r in read_rows(data_dir, "pool", 120)
    ]


@pytest.fixture(scope="session")
def intent_queries(data_dir) -> list[str]:
    return [r["text"] for r in read_rows(data_dir, "test", 12)]


@pytest.fixture(scope="session")
def query_vectors(embedder, intent_queries) -> np.ndarray:
    return embedder.encode(intent_queries)


@pytest.fixture(scope="session")
def intent_pool(embedder, intent_records) -> Pool:
    """A flat pool shared by read-only tests (tests that change a pool build their own)."""
    return Pool(embedder).fit(intent_records)
