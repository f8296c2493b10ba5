"""Small real data for the selection tests (cut from ../shared/data, see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "selection"


@pytest.fixture(scope="session")
def raw_path() -> Path:
    """3,000 rows of the mixed raw pool (fields id, text, source)."""
    return DATA / "raw_small.jsonl"


@pytest.fixture(scope="session")
def target_path() -> Path:
    """300 Amazon food reviews: a DSIR target."""
    return DATA / "target_small.jsonl"


@pytest.fixture(scope="session")
def alpaca_path() -> Path:
    """200 Alpaca-shaped instruction rows."""
    return DATA / "alpaca_small.jsonl"
