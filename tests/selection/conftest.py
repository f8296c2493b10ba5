"""Small real data for the selection tests (cut from ../shared/data, see its README)."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A two-node Ray cluster on this machine (two ``ray start`` raylets, one CPU each); the
    driver of each test job connects to its address. Stopped, all its processes, at the end."""
    pytest.importorskip("ray")
    from ray_cluster import ENV, RayCluster

    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    cluster = RayCluster(tmp_path_factory.mktemp("ray-cluster"), nodes=2)
    try:
        yield cluster
    finally:
        cluster.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
