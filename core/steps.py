"""Step protocols: how offline and request-time components talk to each other.

Scoring and deciding are kept apart (data-juicer's compute_stats/process split): a scorer writes
``record.scores[name]`` over a batch, a filter keeps records by a threshold on one score, and a
selector makes a global decision over everything a map has gathered. Executors (local, Ray) only
need these shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from thresher.core.record import Record

Batch = list[Record]


@runtime_checkable
class Step(Protocol):
    """Anything that turns a stream of batches into a stream of batches."""

    name: str

    def __call__(self, batches: Iterable[Batch]) -> Iterator[Batch]: ...


@runtime_checkable
class Scorer(Protocol):
    """Computes one score per record; ``score`` must not drop or reorder records."""

    name: str

    def score(self, records: Sequence[Record]) -> np.ndarray: ...


@runtime_checkable
class Filter(Protocol):
    """Decides per record from its scores: returns a keep mask and a reason per dropped row."""

    name: str

    def keep(self, records: Sequence[Record]) -> tuple[np.ndarray, list[str | None]]: ...


@runtime_checkable
class Selector(Protocol):
    """A global decision: which of all records to keep (at most ``k`` unique ids)."""

    name: str

    def select(self, records: Sequence[Record], k: int | None = None) -> list[Record]: ...


def apply_scorer(scorer: Scorer, records: Batch) -> Batch:
    """Run ``scorer`` over a batch and write its scores into the records."""
    values = np.asarray(scorer.score(records), dtype=np.float64)
    if values.shape != (len(records),):
        raise ValueError(
            f"scorer {scorer.name!r} returned shape {values.shape} for {len(records)} records"
        )
    for record, value in zip(records, values, strict=True):
        record.scores[scorer.name] = float(value)
    return records
