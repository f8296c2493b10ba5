"""Diverse subsets under a budget: k-center greedy and DEITA-style score-first selection.

k-center greedy follows Sener & Savarese, 2018 ("Active Learning for Convolutional Neural
Networks: A Core-Set Approach"); score-first follows Liu et al., 2024 ("What Makes Good Data for
Alignment? DEITA"): visit rows from the best score down and take one only if its embedding is
farther than a cosine-distance threshold from everything taken so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from thresher.core.errors import ConfigError
from thresher.core.record import Record
from thresher.selection.dedup import record_text

Strategy = Literal["kcenter", "score_first"]


def kcenter_greedy(vectors: np.ndarray, k: int, first: int = 0) -> np.ndarray:
    """Indices of ``k`` rows, each the farthest (in cosine distance) from those chosen before."""
    n = len(vectors)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    chosen = [first]
    distance = 1.0 - vectors @ vectors[first]
    for _ in range(k - 1):
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, 1.0 - vectors @ vectors[nxt])
    return np.array(chosen, dtype=np.int64)


def score_first(vectors: np.ndarray, scores: np.ndarray, k: int, min_distance: float) -> np.ndarray:
    """DEITA's filter: best score first, skipping rows within ``min_distance`` of a kept row."""
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    chosen: list[int] = []
    for i in order:
        if len(chosen) >= k:
            break
        if chosen and float(np.max(vectors[chosen] @ vectors[i])) > 1.0 - min_distance:
            continue
        chosen.append(int(i))
    return np.array(chosen, dtype=np.int64)


@dataclass
class DiverseSubset:
    """Selects at most ``budget`` records that cover the data (a Selector).

    Args:
        embedder: a :class:`thresher.core.embedding.Embedder` (vectors are L2-normalised).
        budget: rows to keep (``k`` given to ``select`` overrides it).
        strategy: ``kcenter`` or ``score_first``.
        score: the score ranked by ``score_first`` (higher is better); without one, rows are
            visited in input order.
        min_distance: cosine distance below which a row is redundant (``score_first``).
        name: the step's name.
    """

    embedder: Any
    budget: int
    strategy: Strategy = "kcenter"
    score: str | None = None
    min_distance: float = 0.1
    name: str = "diversity"

    def __post_init__(self) -> None:
        if self.budget <= 0:
            raise ConfigError(f"budget must be positive, got {self.budget}.", field="budget")
        if self.strategy not in ("kcenter", "score_first"):
            raise ConfigError(
                f"Unknown strategy {self.strategy!r}; use kcenter or score_first.", field="strategy"
            )

    def select(self, records: Sequence[Record], k: int | None = None) -> list[Record]:
        """The chosen records, in input order."""
        k = self.budget if k is None else min(k, self.budget)
        if not records:
            return []
        vectors = self.embedder.encode([record_text(r) for r in records])
        if self.strategy == "kcenter":
            # Start from the row nearest the mean: a central, typical example.
            first = int(np.argmax(vectors @ vectors.mean(axis=0)))
            picked = kcenter_greedy(vectors, k, first)
        else:
            values = np.array(
                [
                    r.scores.get(self.score, np.nan) if self.score else -i
                    for i, r in enumerate(records)
                ],
                dtype=np.float64,
            )
            picked = score_first(vectors, values, k, self.min_distance)
        return [records[i] for i in sorted(picked.tolist())]
