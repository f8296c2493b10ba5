"""LLMLingua-2 (Pan et al., 2024, "LLMLingua-2: Data Distillation for Efficient and Faithful
Task-Agnostic Prompt Compression", arXiv:2403.12968): a bidirectional token classifier gives each
word a keep probability in one forward pass per window, and the words below the percentile that
meets the budget are dropped. Thresher adds question awareness and dynamic ratios.

The model is any Hugging Face ``AutoModelForTokenClassification`` with two labels, **label 1 =
keep** (microsoft's ``llmlingua-2-*`` checkpoints use the same convention), wrapped by
:class:`thresher.core.token_classifier.TokenClassifier`; by default Thresher's own classifier on
all-MiniLM-L6-v2 (``compression/train/MODEL_CARD.md``).

With a question, sentences are ranked by relevance to it and the budget is shared by rank: the
best-ranked sentences are kept whole until they hold ``whole_share`` of the budget (a reader
needs the sentence, not a bag of its words), and the rest compete on keep probability plus a
bonus that grows with rank (``dynamic``). By default whole sentences fill the whole budget and
only what is left when the next one does not fit goes word by word. That default was tuned on
needle items of another seed and on long-context stories not used for evaluation
(``bench/compression.py --task needles --seed 99``; the runs are in
``bench/results/compression_tuning_*.json``). Without a question it is plain LLMLingua-2.

The ranker is the sentence embedder the service already loads (all-MiniLM-L6-v2), at almost no
cost: the default classifier is that encoder with a retrained top layer, so one pass serves
both. The embedder's own top layer runs on the classifier's hidden states below its retrained
layer (:meth:`thresher.core.token_classifier.TokenClassifier.keep_probs`), and a sentence's
vector is the mean of its tokens' vectors, each seen in its 128-token window (late chunking)
rather than alone. It finds a planted sentence from a paraphrased question that shares few
words with it ("Which number do I need to get into the stable?" for "The code for the stable is
3614."), where IDF-weighted word overlap (``ranker="lexical"``) misses more often
(``bench/reader_tasks.py`` measures both). The classifier is not conditioned on the question, so
it cannot rank by itself. A classifier folder with an encoder
of its own (microsoft's) gets its sentences embedded separately, which roughly doubles the time
of its pass; ``lexical`` needs no embedder and ``none`` is plain LLMLingua-2 (one percentile cut
over all words).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, ClassVar, Literal

import numpy as np

from thresher.compression.base import BaseCompressor, Doc, ModelKind, Selection
from thresher.compression.prompt import Prompt
from thresher.compression.units import unit_of_chars
from thresher.core.errors import InputError
from thresher.core.text import sentence_groups

Ranker = Literal["embedder", "lexical", "none"]
RANKERS: tuple[str, ...] = ("embedder", "lexical", "none")
_WORD = re.compile(r"\w+")


class LLMLingua2(BaseCompressor):
    """Token-classifier compression with question-aware sentence ranking.

    Args:
        scorer: A :class:`thresher.core.token_classifier.TokenClassifier`
            (``ModelProvider.token_classifier()``).
        counter: The target model's token counter; rates are met in its tokens.
        embedder: A :class:`thresher.core.embedding.Embedder` for ``ranker="embedder"``; without one
            the ranker falls back to ``lexical``.
        ranker: How sentences are ranked against the question: ``embedder``, ``lexical`` or
            ``none`` (plain LLMLingua-2: one percentile cut over all words).
        whole_share: Share of the free budget that the best-ranked sentences fill whole.
        dynamic: Weight of the rank bonus for the other sentences (0 = by probability alone).
        **kwargs: See :class:`thresher.compression.base.BaseCompressor`.
    """

    name: ClassVar[str] = "llmlingua2"
    model: ClassVar[ModelKind] = "token-classifier"
    ranks_by: ClassVar[Literal["embedder"] | None] = "embedder"

    def __init__(
        self,
        scorer: Any,
        counter: Any,
        *,
        embedder: Any = None,
        ranker: Ranker = "embedder",
        whole_share: float = 1.0,
        dynamic: float = 0.4,
        **kwargs: Any,
    ) -> None:
        super().__init__(scorer, counter, **kwargs)
        if not hasattr(scorer, "keep_probs"):
            raise InputError(
                f"llmlingua2 needs a token classifier (ModelProvider.token_classifier()), got "
                f"{type(scorer).__name__}.",
                field="model",
            )
        if ranker not in RANKERS:
            raise InputError(f"ranker is {ranker!r}; use one of {list(RANKERS)}.", field="ranker")
        if not 0 <= whole_share <= 1:
            raise InputError(
                f"whole_share must be in [0, 1], got {whole_share}.", field="whole_share"
            )
        self.embedder = embedder
        self.ranker = ranker if (ranker != "embedder" or embedder is not None) else "lexical"
        self.whole_share = whole_share
        self.dynamic = dynamic

    def select(self, docs: list[Doc], budget: int, prompt: Prompt) -> Selection:
        question = prompt.question.strip()
        ranked = bool(question) and self.ranker != "none"
        # One pass for both: the embedder's top layers run on the classifier's hidden states.
        shared = ranked and self.ranker == "embedder" and self.scorer.shares_encoder(self.embedder)
        tokens = self.scorer.keep_probs(
            [d.units.text for d in docs], embedder=self.embedder if shared else None
        )
        where = [_unit_of_tokens(d, tp) for d, tp in zip(docs, tokens, strict=True)]
        groups = [sentence_groups(d.units.pieces) for d in docs]
        scores = [
            _unit_probs(len(d.units), tp, w) for d, tp, w in zip(docs, tokens, where, strict=True)
        ]
        note = None
        if ranked:
            pooled = None
            if shared:
                pooled = [
                    (tp.vectors, g[w]) for tp, g, w in zip(tokens, groups, where, strict=True)
                ]
            note = self._rank(docs, groups, scores, budget, question, pooled)
        keep = _top_by_score(scores, [d.costs for d in docs], [d.forced for d in docs], budget)
        for d, m in zip(docs, keep, strict=True):
            collapse_punctuation(d.units.pieces, m, d.forced)
        return Selection(keep, scores, note=note)

    def _rank(self, docs, groups, scores, budget: int, question: str, pooled) -> str:
        """Boost scores by sentence rank in place; the top sentences get kept whole. ``pooled``
        holds each doc's token vectors and the sentence of each token when the classifier's pass
        gave them (else sentences are embedded on their own, or ranked by word overlap)."""
        sentences: list[tuple[int, int]] = []  # (doc, group)
        texts: list[str] = []
        for k, (d, g) in enumerate(zip(docs, groups, strict=True)):
            parts: list[list[str]] = [[] for _ in range(int(g.max()) + 1 if len(g) else 0)]
            for piece, gi in zip(d.units.pieces, g.tolist(), strict=True):
                parts[gi].append(piece)
            for s, pieces in enumerate(parts):
                text = "".join(pieces).strip()
                if text:
                    sentences.append((k, s))
                    texts.append(text)
        if not texts:
            return "nothing to rank"
        sims = self._similarity(question, texts, sentences, pooled)
        order = np.argsort(-sims, kind="stable")
        n = len(order)
        rel = np.empty(n)
        rel[order] = 1.0 - np.arange(n) / max(n - 1, 1)
        free = budget - sum(float(d.costs[d.forced].sum()) for d in docs)
        # Each sentence's cost (forced units are paid already) and, below, its score bonus.
        cost_of = [
            np.bincount(g, weights=np.where(d.forced, 0.0, d.costs), minlength=int(g.max()) + 1)
            if len(g)
            else np.zeros(0)
            for d, g in zip(docs, groups, strict=True)
        ]
        bonus = [np.zeros(len(c)) for c in cost_of]
        held, whole, filling = 0.0, 0, True
        for j in order:
            k, s = sentences[j]
            cost = float(cost_of[k][s])
            whole_now = filling = filling and held + cost <= self.whole_share * free
            if whole_now:
                held += cost
                whole += 1
            bonus[k][s] = (2.0 if whole_now else 0.0) + self.dynamic * (rel[j] - 0.5)
        for k, g in enumerate(groups):
            if len(g):
                scores[k] += bonus[k][g]
        return f"{whole} of {n} sentences ranked top by the question kept whole"

    def _similarity(self, question: str, texts: list[str], sentences, pooled) -> np.ndarray:
        if self.ranker != "embedder":
            return lexical_similarity(question, texts)
        (q,) = self.embedder.encode([question])
        if pooled is None:
            # Small batches: sentences differ in length and padding costs more than calls.
            return np.asarray(self.embedder.encode(texts, batch_size=16) @ q, dtype=np.float64)
        means = [sentence_vectors(vectors, sentence) for vectors, sentence in pooled]
        return np.stack([means[k][s] for k, s in sentences]) @ q.astype(np.float64)


def sentence_vectors(vectors: np.ndarray, sentence: np.ndarray) -> np.ndarray:
    """Sentence embeddings from token vectors (tokens x dim) and each token's sentence (in
    order): the normalised mean of each sentence's tokens, one row per sentence number."""
    mean = np.zeros((int(sentence.max()) + 1 if len(sentence) else 0, vectors.shape[1]))
    if len(sentence):  # tokens run in sentence order: sum each run
        starts = np.flatnonzero(np.r_[True, sentence[1:] != sentence[:-1]])
        counts = np.diff(np.r_[starts, len(sentence)])
        runs = np.add.reduceat(vectors, starts, axis=0, dtype=np.float64)
        mean[sentence[starts]] = runs / counts[:, None]
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def _unit_of_tokens(doc: Doc, tokens: Any) -> np.ndarray:
    return np.asarray(unit_of_chars(doc.units, tokens.offsets), dtype=np.int64)


def _unit_probs(n: int, tokens: Any, where: np.ndarray) -> np.ndarray:
    """The mean keep probability of each unit's tokens; a unit with none (whitespace) takes its
    predecessor's."""
    if not tokens.offsets:
        return np.full(n, 0.5)
    total = np.bincount(where, weights=tokens.keep, minlength=n)
    count = np.bincount(where, minlength=n)
    p = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    last = 0.5
    for i in range(n):
        if math.isnan(p[i]):
            p[i] = last
        last = p[i]
    return p


def lexical_similarity(question: str, texts: list[str]) -> np.ndarray:
    """IDF-weighted overlap of the question's words with each text's (the embedder-free ranker)."""
    bags = [set(_WORD.findall(t.lower())) for t in texts]
    df = Counter(w for b in bags for w in b)
    q = set(_WORD.findall(question.lower()))
    idf = {w: math.log((1 + len(bags)) / (1 + df[w])) + 1 for w in q}
    return np.array([sum(idf[w] for w in q & b) / math.sqrt(len(b) + 1) for b in bags])


def _top_by_score(
    scores: list[np.ndarray], costs: list[np.ndarray], forced: list[np.ndarray], budget: float
) -> list[np.ndarray]:
    """Forced units, then the highest-scoring units while they fit: LLMLingua-2's percentile
    cut, made exact for units of different token costs."""
    keep = [f.copy() for f in forced]
    left = budget - sum(float(c[f].sum()) for c, f in zip(costs, forced, strict=True))
    flat = np.concatenate(scores) if scores else np.zeros(0)
    cost = np.concatenate(costs) if costs else np.zeros(0)
    done = np.concatenate(forced) if forced else np.zeros(0, bool)
    offsets = np.cumsum([0] + [len(s) for s in scores])
    for i in np.argsort(-flat, kind="stable"):
        if left <= 0:
            break
        if done[i] or cost[i] > left:
            continue
        d = int(np.searchsorted(offsets, i, side="right") - 1)
        keep[d][i - offsets[d]] = True
        left -= cost[i]
    return keep


def collapse_punctuation(pieces: list[str], mask: np.ndarray, forced: np.ndarray) -> None:
    """Where the words between kept punctuation were all dropped, keep only the last mark of the
    run (", , ." becomes "."), in place."""
    last_punct = -1
    for i, piece in enumerate(pieces):
        if not mask[i] or not piece.strip():
            continue
        if _WORD.search(piece) or forced[i]:
            last_punct = -1
            continue
        if last_punct >= 0 and not forced[last_punct]:
            mask[last_punct] = False
        last_punct = i
