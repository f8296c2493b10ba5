"""Demonstration retrievers behind one protocol: ``fit(pool)``, then ``retrieve(query, k)``.

Relevance-only: ``random`` (the baseline), ``knn`` (KATE, Liu et al. 2022, "What Makes Good
In-Context Examples for GPT-3?"), ``bm25`` (Robertson and Zaragoza 2009). Relevance with
diversity: ``mmr`` (Carbonell and Goldstein 1998). ``label_balanced`` wraps any of them to
spread the k demonstrations evenly over the labels. VoteK and DPP live in
:mod:`thresher.prompting.diverse`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from thresher.core.errors import InputError, require
from thresher.prompting.pool import Pool, record_label
from thresher.prompting.result import Demonstration, RetrievalResult


@runtime_checkable
class Retriever(Protocol):
    """Picks up to ``k`` unique demonstrations of a fitted pool for a query."""

    name: str

    def fit(self, pool: Pool) -> Retriever: ...

    def retrieve(
        self, query: str, k: int, *, vector: np.ndarray | None = None
    ) -> RetrievalResult: ...


def check_query(query: Any) -> str:
    if not isinstance(query, str) or not query.strip():
        raise InputError("query is empty; give the text to find demonstrations for.", field="query")
    return query


def check_k(k: Any, pool_size: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise InputError(f"k must be a positive integer, got {k!r}.", field="k")
    if k > pool_size:
        raise InputError(
            f"k={k} is larger than the pool ({pool_size} records); ask for at most {pool_size}.",
            field="k",
        )
    return int(k)


def query_seed(seed: int, query: str) -> np.random.Generator:
    """A generator that gives the same draw for the same (seed, query) in every process."""
    return np.random.default_rng([seed, zlib.crc32(query.encode("utf-8"))])


class BaseRetriever:
    """Validation, query embedding, lazy refit after pool changes, and result building.

    Subclasses implement :meth:`_rank`, returning (rows, scores) best first, and may override
    :meth:`_prepare` to build per-pool state (called again whenever the pool changes).
    """

    name = "base"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, pool: Pool) -> BaseRetriever:
        self.pool_ = pool
        self._prepare(pool)
        self.fitted_version_ = pool.version_
        return self

    def _prepare(self, pool: Pool) -> None:
        """Per-pool state; nothing by default."""

    def retrieve(self, query: str, k: int, *, vector: np.ndarray | None = None) -> RetrievalResult:
        """The ``k`` demonstrations for ``query``, best first.

        Args:
            query: the input that needs demonstrations.
            k: how many (1 to the pool size).
            vector: the query's embedding, if the caller already has it.
        """
        pool = getattr(self, "pool_", None)
        if pool is None:
            raise InputError(
                f"Retriever {self.name!r} is not fitted; call fit(pool).", field="pool"
            )
        query = check_query(query)
        k = check_k(k, len(pool))
        if pool.version_ != self.fitted_version_:
            self.fit(pool)
        if vector is None:
            vector = pool.embed([query])[0]
        rows, scores = self._rank(query, np.asarray(vector, dtype=np.float32), k)
        rows = np.asarray(rows, dtype=np.int64)[:k]
        sims = pool.embeddings_[rows] @ vector
        demos = [
            Demonstration(pool.records_[r], float(s), float(m))
            for r, s, m in zip(rows, scores, sims, strict=False)
        ]
        return RetrievalResult(query=query, method=self.name, demonstrations=demos)

    def _rank(
        self, query: str, vector: np.ndarray, k: int
    ) -> tuple[Sequence[int], Sequence[float]]:
        raise NotImplementedError

    def _nearest(self, vector: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.pool_.search(vector[None, :], n)
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]


class RandomRetriever(BaseRetriever):
    """Uniform draws without replacement, seeded per query (the baseline every method must beat)."""

    name = "random"

    def _rank(
        self, query: str, vector: np.ndarray, k: int
    ) -> tuple[Sequence[int], Sequence[float]]:
        rows = query_seed(self.seed, query).choice(len(self.pool_), size=k, replace=False)
        return rows, self.pool_.embeddings_[rows] @ vector


class KNNRetriever(BaseRetriever):
    """KATE: the k nearest pool records by cosine similarity of sentence embeddings."""

    name = "knn"

    def _rank(
        self, query: str, vector: np.ndarray, k: int
    ) -> tuple[Sequence[int], Sequence[float]]:
        return self._nearest(vector, k)


_TOKEN = re.compile(r"\w+", re.UNICODE)


def bm25_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class BM25Retriever(BaseRetriever):
    """Okapi BM25 over lower-cased word tokens (rank_bm25), ties broken by embedding similarity."""

    name = "bm25"

    def __init__(self, *, k1: float = 1.5, b: float = 0.75, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.k1 = k1
        self.b = b

    def _prepare(self, pool: Pool) -> None:
        rank_bm25 = require("rank_bm25", "prompting")
        corpus = [bm25_tokens(r.content) or ["<empty>"] for r in pool.records_]
        self.bm25_ = rank_bm25.BM25Okapi(corpus, k1=self.k1, b=self.b)

    def _rank(
        self, query: str, vector: np.ndarray, k: int
    ) -> tuple[Sequence[int], Sequence[float]]:
        scores = np.asarray(self.bm25_.get_scores(bm25_tokens(query)), dtype=np.float64)
        # A query sharing no word with the pool scores 0 everywhere; similarity breaks the tie.
        sims = self.pool_.embeddings_ @ vector
        order = np.lexsort((-sims, -scores))[:k]
        return order, scores[order]


class MMRRetriever(BaseRetriever):
    """Maximal marginal relevance over the nearest ``candidates``.

    Each step takes argmax ``lambda_ * sim(q, d) - (1 - lambda_) * max_s sim(d, s)`` over the
    selected ``s``: ``lambda_=1`` is kNN, lower values trade relevance for diversity.
    """

    name = "mmr"

    def __init__(self, *, lambda_: float = 0.7, candidates: int = 100, seed: int = 0) -> None:
        super().__init__(seed=seed)
        if not 0.0 <= lambda_ <= 1.0:
            raise InputError(f"lambda_ must be in [0, 1], got {lambda_}.", field="lambda_")
        self.lambda_ = lambda_
        self.candidates = candidates

    def _rank(
        self, query: str, vector: np.ndarray, k: int
    ) -> tuple[Sequence[int], Sequence[float]]:
        rows, rel = self._nearest(vector, max(k, self.candidates))
        emb = self.pool_.embeddings_[rows]
        redundancy = np.full(len(rows), -np.inf)
        chosen: list[int] = []
        gains: list[float] = []
        available = np.ones(len(rows), dtype=bool)
        for _ in range(min(k, len(rows))):
            penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
            gain = self.lambda_ * rel - (1.0 - self.lambda_) * penalty
            gain[~available] = -np.inf
            best = int(np.argmax(gain))
            chosen.append(best)
            gains.append(float(gain[best]))
            available[best] = False
            redundancy = np.maximum(redundancy, emb @ emb[best])
        return rows[chosen], gains


class LabelBalancedRetriever(BaseRetriever):
    """Round-robin over labels in the base retriever's ranking, so each label gets a fair share.

    The base ranks ``oversample * k`` candidates (at least 64), and a label none of them carries
    brings its record nearest the query; then labels take turns, each giving its best remaining
    candidate, labels ordered by their best candidate. Records with no label form a group.
    """

    name = "label_balanced"

    def __init__(
        self, *, base: str = "knn", oversample: int = 8, seed: int = 0, **base_options: Any
    ) -> None:
        super().__init__(seed=seed)
        self.base = base
        self.oversample = oversample
        self.base_options = base_options

    def _prepare(self, pool: Pool) -> None:
        from thresher.prompting.strategies import get_retriever

        if self.base == self.name:
            raise InputError("label_balanced cannot wrap itself; pick another base.", field="base")
        self.base_ = get_retriever(self.base, seed=self.seed, **self.base_options).fit(pool)

    def _rank(
        self, query: str, vector: np.ndarray, k: int
    ) -> tuple[Sequence[int], Sequence[float]]:
        n = min(len(self.pool_), max(64, self.oversample * k))
        ranked = self.base_.retrieve(query, n, vector=vector).demonstrations
        groups: dict[str | None, list[Demonstration]] = {}
        for d in ranked:
            groups.setdefault(record_label(d.record), []).append(d)
        missing = [label for label in self.pool_.labels_ if label not in groups]
        if missing:  # labels the base never ranked high: bring each one's nearest record
            sims = self.pool_.embeddings_ @ vector
            labels = self.pool_.record_labels_
            for label in missing:
                rows = np.flatnonzero(labels == label)
                best = int(rows[np.argmax(sims[rows])])
                record = self.pool_.records_[best]
                groups[label] = [Demonstration(record, float(sims[best]), float(sims[best]))]
        queues = list(groups.values())
        picked: list[Demonstration] = []
        while len(picked) < k and any(queues):
            for queue in queues:
                if queue and len(picked) < k:
                    picked.append(queue.pop(0))
        rows = [self.pool_.row_of_[d.id] for d in picked]
        return rows, [d.score for d in picked]
