"""Diversity-aware retrievers: VoteK (Su et al. 2023) and greedy DPP MAP (Chen et al. 2018).

VoteK follows "Selective Annotation Makes Language Models Better Few-Shot Learners" (Su et al.,
ICLR 2023): a k-nearest-neighbour graph over the pool, then greedy selection where each vertex
is voted for by the records pointing to it, each vote discounted by ``rho ** -c`` once ``c`` of
that voter's neighbours are already selected. The selected set is the "annotated" pool, and as in
the paper each query then gets its most similar demonstrations from that set.

DPP retrieval uses a quality-diversity kernel ``L = diag(q) S diag(q)`` over the nearest
candidates (cosine similarity ``S``, quality ``q = exp(alpha * sim(query, d))``) and the fast
greedy MAP inference of Chen, Zhang and Zhou 2018 ("Fast Greedy MAP Inference for Determinantal
Point Process to Improve Recommendation Diversity"), which updates a Cholesky factor one column
per pick.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import InputError, require
from prompting.pool import Pool
from prompting.retrievers import BaseRetriever


def votek_select(
    embeddings: np.ndarray, pool: Pool, budget: int, *, k_graph: int, rho: float
) -> np.ndarray:
    """Rows chosen by graph-based vote-k, in selection order."""
    sparse = require("scipy.sparse", "prompting")
    n = len(embeddings)
    kg = max(1, min(k_graph, n - 1))
    _, rows = pool.search(embeddings, kg + 1)
    src, dst = [], []
    for v in range(n):
        neighbours = [u for u in rows[v] if u >= 0 and u != v][:kg]
        src.extend([v] * len(neighbours))
        dst.extend(neighbours)
    # graph[v, u] = 1 when u is among v's nearest: v votes for u.
    graph = sparse.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    graph_t = graph.T.tocsr()
    covered = np.zeros(n)  # c(v): how many of v's neighbours are already selected
    selected: list[int] = []
    is_selected = np.zeros(n, dtype=bool)
    for _ in range(min(budget, n)):
        weight = np.where(is_selected, 0.0, rho ** (-covered))
        score = graph_t @ weight
        score[is_selected] = -np.inf
        best = int(np.argmax(score))
        selected.append(best)
        is_selected[best] = True
        covered += graph_t[best].toarray().ravel()
    return np.asarray(selected, dtype=np.int64)


class VoteKRetriever(BaseRetriever):
    """VoteK selective annotation, then the most similar selected records per query.

    Args:
        budget: how many pool records vote-k selects (the paper's annotation budget); a query
            asking for more than ``budget`` extends the selection.
        k_graph: neighbours per vertex in the similarity graph.
        rho: vote discount base (10 in the paper).
    """

    name = "votek"

    def __init__(self, *, budget: int = 100, k_graph: int = 15, rho: float = 10.0, seed: int = 0):
        super().__init__(seed=seed)
        if budget <= 0:
            raise InputError(f"budget must be positive, got {budget}.", field="budget")
        if rho <= 1.0:
            raise InputError(f"rho must be above 1, got {rho}.", field="rho")
        self.budget = budget
        self.k_graph = k_graph
        self.rho = rho

    def _prepare(self, pool: Pool) -> None:
        self.selected_ = self._select(pool, self.budget)

    def _select(self, pool: Pool, budget: int) -> np.ndarray:
        return votek_select(pool.embeddings_, pool, budget, k_graph=self.k_graph, rho=self.rho)

    def _rank(
        self, query: str, vector: np.ndarray, k: int
    ) -> tuple[Sequence[int], Sequence[float]]:
        if k > len(self.selected_):
            self.selected_ = self._select(self.pool_, k)
        sims = self.pool_.embeddings_[self.selected_] @ vector
        order = np.argsort(-sims, kind="stable")[:k]
        return self.selected_[order], sims[order]


def greedy_dpp_map(kernel: np.ndarray, k: int, eps: float = 1e-10) -> tuple[list[int], list[float]]:
    """Greedy MAP of a DPP with PSD ``kernel``: picks and each pick's log marginal gain."""
    n = kernel.shape[0]
    cis = np.zeros((k, n))
    d2 = np.diag(kernel).astype(np.float64).copy()
    chosen: list[int] = []
    gains: list[float] = []
    j = int(np.argmax(d2))
    while len(chosen) < min(k, n):
        if d2[j] < eps:
            break
        chosen.append(j)
        gains.append(float(np.log(d2[j])))
        it = len(chosen) - 1
        e = (kernel[j] - cis[:it, j] @ cis[:it]) / np.sqrt(d2[j])
        cis[it] = e
        d2 = d2 - e**2
        d2[chosen] = -np.inf
        j = int(np.argmax(d2))
    return chosen, gains


class DPPRetriever(BaseRetriever):
    """Greedy DPP MAP over the nearest ``candidates`` with a quality-diversity kernel.

    Args:
        alpha: how sharply quality follows query similarity; large values approach kNN.
        candidates: nearest records the kernel is built over.
    """

    name = "dpp"

    def __init__(self, *, alpha: float = 5.0, candidates: int = 100, seed: int = 0) -> None:
        super().__init__(seed=seed)
        if alpha < 0:
            raise InputError(f"alpha must be non-negative, got {alpha}.", field="alpha")
        self.alpha = alpha
        self.candidates = candidates

    def _rank(
        self, query: str, vector: np.ndarray, k: int
    ) -> tuple[Sequence[int], Sequence[float]]:
        rows, rel = self._nearest(vector, max(k, self.candidates))
        emb = self.pool_.embeddings_[rows].astype(np.float64)
        quality = np.exp(self.alpha * (rel.astype(np.float64) - rel.max()))
        kernel = quality[:, None] * (emb @ emb.T) * quality[None, :]
        picks, gains = greedy_dpp_map(kernel, k)
        if len(picks) < k:  # the kernel ran out of rank (duplicates): fill by relevance
            rest = [i for i in range(len(rows)) if i not in set(picks)][: k - len(picks)]
            gains += [float(np.log(1e-10))] * len(rest)
            picks += rest
        return rows[picks], gains
