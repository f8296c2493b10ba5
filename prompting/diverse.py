"""Diversity-aware retrievers: VoteK (Su et al. 2023) and greedy DPP MAP (Chen et al. 2018).

VoteK follows "Selective Annotation Makes Language Models Better Few-Shot Learners" (Su et al.,
ICLR 2023): a k-nearest-neighbour graph over the pool, then greedy selection where each vertex
is voted for by the records pointing to it, each vote discounted by ``rho ** -c`` once ``c`` of
that voter's neighbours are already selected. Given the LM's scorer, the paper's second stage
picks most of the budget from buckets of the LM's confidence on the unselected records. The
selected set is the "annotated" pool, and as in the paper each query then gets its most
similar demonstrations from that set.

DPP retrieval uses a quality-diversity kernel ``L = diag(q) S diag(q)`` over the nearest
candidates (cosine similarity ``S``, quality ``q = exp(alpha * sim(query, d))``) and the fast
greedy MAP inference of Chen, Zhang and Zhou 2018 ("Fast Greedy MAP Inference for Determinantal
Point Process to Improve Recommendation Diversity"), which updates a Cholesky factor one column
per pick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from thresher.core.errors import InputError, require
from thresher.core.scoring import TokenScorer
from thresher.prompting.assembly import get_template
from thresher.prompting.pool import Pool
from thresher.prompting.result import Demonstration
from thresher.prompting.retrievers import BaseRetriever


def vote_graph(embeddings: np.ndarray, pool: Pool, k_graph: int) -> Any:
    """Sparse ``graph[v, u] = 1`` when ``u`` is among ``v``'s nearest: ``v`` votes for ``u``."""
    sparse = require("scipy.sparse", "prompting")
    n = len(embeddings)
    kg = max(1, min(k_graph, n - 1))
    _, rows = pool.search(embeddings, kg + 1)
    src, dst = [], []
    for v in range(n):
        neighbours = [u for u in rows[v] if u >= 0 and u != v][:kg]
        src.extend([v] * len(neighbours))
        dst.extend(neighbours)
    return sparse.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))


class _Votes:
    """Greedy vote-k state: each pick discounts the votes of the records pointing to it."""

    def __init__(self, graph: Any, rho: float) -> None:
        self.graph_t = graph.T.tocsr()
        self.rho = rho
        n = graph.shape[0]
        self.covered = np.zeros(n)  # c(v): how many of v's neighbours are already selected
        self.is_selected = np.zeros(n, dtype=bool)
        self.selected: list[int] = []

    def scores(self) -> np.ndarray:
        weight = np.where(self.is_selected, 0.0, self.rho ** (-self.covered))
        score = self.graph_t @ weight
        score[self.is_selected] = -np.inf
        return score

    def pick(self, among: np.ndarray | None = None) -> None:
        score = self.scores()
        if among is not None:
            best = int(among[np.argmax(score[among])])
        else:
            best = int(np.argmax(score))
        self.selected.append(best)
        self.is_selected[best] = True
        self.covered += self.graph_t[best].toarray().ravel()


def votek_select(
    embeddings: np.ndarray, pool: Pool, budget: int, *, k_graph: int, rho: float
) -> np.ndarray:
    """Rows chosen by graph-based vote-k (the paper's first stage only), in selection order."""
    votes = _Votes(vote_graph(embeddings, pool, k_graph), rho)
    for _ in range(min(budget, len(embeddings))):
        votes.pick()
    return np.asarray(votes.selected, dtype=np.int64)


# (text, its demonstrations, the pool's labels) -> how sure the LM is of its own label.
Confidence = Callable[[str, Sequence[Demonstration], Sequence[str]], float]


class LabelConfidence:
    """How sure the LM is of its own label for a text, given demonstrations.

    The prompt is assembled with the classification template; each label is scored as the
    continuation, and the confidence is the best label's mean log-prob per token.

    Args:
        scorer: the LM's :class:`thresher.core.scoring.TokenScorer`.
        instruction: the task line written before the demonstrations.
    """

    def __init__(self, scorer: TokenScorer, *, instruction: str | None = None) -> None:
        self.scorer = scorer
        self.instruction = instruction

    def __call__(self, text: str, demos: Sequence[Demonstration], labels: Sequence[str]) -> float:
        prompt = get_template("classification").prompt(text, demos, self.instruction)
        scores = self.scorer.continuation_logprobs(
            [prompt] * len(labels), [" " + label for label in labels]
        )
        return max(float(np.mean(s)) for s in scores)


def votek_two_stage(
    pool: Pool,
    budget: int,
    confidence: Confidence,
    *,
    k_graph: int,
    rho: float,
    shots: int = 4,
    sample: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Both stages of vote-k: a tenth of the budget by votes, the rest by LM confidence.

    Stage one selects ``budget // 10`` rows (at least one) by graph votes. Each other row (or a
    seeded ``sample`` of them) is then labelled by the LM with its ``shots`` most similar
    selected rows as demonstrations; rows are sorted from least to most confident, the most
    confident tenth is set aside (the LM already handles those), and the rest is cut into one
    bucket per remaining pick, each giving its highest-voted row, so the selection spans the
    range of difficulty while staying diverse.
    """
    embeddings = pool.embeddings_
    n = len(embeddings)
    budget = min(budget, n)
    votes = _Votes(vote_graph(embeddings, pool, k_graph), rho)
    for _ in range(max(1, budget // 10)):
        votes.pick()
    remaining = budget - len(votes.selected)
    if remaining <= 0:
        return np.asarray(votes.selected, dtype=np.int64)
    rest = np.flatnonzero(~votes.is_selected)
    if sample is not None and sample < len(rest):
        rng = np.random.default_rng(seed)
        rest = np.sort(rng.choice(rest, max(sample, remaining), replace=False))
    chosen = np.asarray(votes.selected, dtype=np.int64)
    labels = pool.labels_
    conf = np.empty(len(rest))
    for i, row in enumerate(tqdm(rest, desc="vote-k confidence", disable=not progress)):
        sims = embeddings[chosen] @ embeddings[row]
        nearest = chosen[np.argsort(-sims, kind="stable")[:shots]][::-1]  # most similar last
        demos = [
            Demonstration(pool.records_[r], float(s), float(s))
            for r, s in zip(nearest, embeddings[nearest] @ embeddings[row], strict=True)
        ]
        conf[i] = confidence(pool.records_[row].content, demos, labels)
    by_confidence = rest[np.argsort(conf, kind="stable")]
    kept = by_confidence[: max(remaining, int(round(0.9 * len(by_confidence))))]
    for bucket in np.array_split(kept, remaining):
        if len(bucket):
            votes.pick(among=bucket)
    return np.asarray(votes.selected, dtype=np.int64)


class VoteKRetriever(BaseRetriever):
    """VoteK selective annotation, then the most similar selected records per query.

    Without a scorer only the graph stage runs (``budget`` rows by votes). With a scorer and a
    labelled pool, the paper's second stage picks nine tenths of the budget by the LM's
    confidence (:func:`votek_two_stage`).

    Args:
        budget: how many pool records vote-k selects (the paper's annotation budget); a query
            asking for more than ``budget`` extends the selection.
        k_graph: neighbours per vertex in the similarity graph.
        rho: vote discount base (10 in the paper).
        scorer: the LM's :class:`thresher.core.scoring.TokenScorer`, for the confidence stage.
        instruction: the task line used in the confidence prompts.
        shots: demonstrations per confidence prompt.
        sample: score at most this many unselected records in the confidence stage (it costs
            one LM call per record and label); ``None`` scores them all.
    """

    name = "votek"

    def __init__(
        self,
        *,
        budget: int = 100,
        k_graph: int = 15,
        rho: float = 10.0,
        scorer: TokenScorer | None = None,
        instruction: str | None = None,
        shots: int = 4,
        sample: int | None = 500,
        seed: int = 0,
    ):
        super().__init__(seed=seed)
        if budget <= 0:
            raise InputError(f"budget must be positive, got {budget}.", field="budget")
        if rho <= 1.0:
            raise InputError(f"rho must be above 1, got {rho}.", field="rho")
        if shots <= 0:
            raise InputError(f"shots must be positive, got {shots}.", field="shots")
        self.budget = budget
        self.k_graph = k_graph
        self.rho = rho
        self.scorer = scorer
        self.instruction = instruction
        self.shots = shots
        self.sample = sample

    def _prepare(self, pool: Pool) -> None:
        if self.scorer is not None and not pool.labels_:
            raise InputError(
                "The vote-k confidence stage needs a labelled pool; give records labels or "
                "drop scorer= for the graph-only selection.",
                field="scorer",
            )
        self.selected_ = self._select(pool, self.budget)

    def _select(self, pool: Pool, budget: int) -> np.ndarray:
        if self.scorer is None:
            return votek_select(pool.embeddings_, pool, budget, k_graph=self.k_graph, rho=self.rho)
        return votek_two_stage(
            pool,
            budget,
            LabelConfidence(self.scorer, instruction=self.instruction),
            k_graph=self.k_graph,
            rho=self.rho,
            shots=self.shots,
            sample=self.sample,
            seed=self.seed,
            progress=pool.progress,
        )

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
