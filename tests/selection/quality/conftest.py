"""Instruction rows with seeded defects (cut from ../shared/data/instructions*.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thresher.core.record import Record

DATA = Path(__file__).resolve().parents[2] / "data" / "quality"


@pytest.fixture(scope="session")
def instructions_path() -> Path:
    """365 Alpaca rows: 300 clean, six of each defect type and the originals of duplicates."""
    return DATA / "instructions_small.jsonl"


@pytest.fixture(scope="session")
def labels() -> dict[str, dict]:
    with open(DATA / "instructions_small_labels.jsonl", encoding="utf-8") as fh:
        return {row["id"]: row for row in map(json.loads, fh)}


@pytest.fixture()
def records(instructions_path: Path) -> list[Record]:
    with open(instructions_path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return [Record(r["id"], text=r["output"], metadata={"row": r}) for r in rows]
