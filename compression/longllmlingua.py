"""LongLLMLingua (Jiang et al., 2023, "LongLLMLingua: Accelerating and Enhancing LLMs in Long
Context Scenarios via Prompt Compression", arXiv:2310.06839): question-aware coarse ranking,
document reordering, dynamic ratios by rank, question-conditioned token scores and subsequence
recovery (:mod:`thresher.compression.recover`)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np

from thresher.compression.base import BaseCompressor, Doc, Selection
from thresher.compression.budget import rank_rates
from thresher.compression.iterative import compress_iteratively
from thresher.compression.prompt import Prompt
from thresher.compression.units import Units
from thresher.core.text import ends_sentence

Reorder = Literal["sort", "original", "two_ends"]
# The paper appends this to the question so that p(question | doc) asks whether the doc holds
# the answer rather than whether it predicts the question's wording.
RESTRICT = " We can get the answer to this question in the given documents."


class LongLLMLingua(BaseCompressor):
    """Question-aware compression of long contexts.

    Contexts are ranked by how much each raises the log-probability of the question (the
    contrast against no context at all), kept best first up to ``coarse_keep`` times the budget,
    optionally reordered (``sort``: best first; ``two_ends``: best at both ends; ``original``),
    and compressed token by token with more room for higher ranks. Token scores are taken with the
    question in the KV cache and contrasted with the question-free ones: a token the question
    makes predictable is relevant to it. A single long context is cut into chunks of about
    ``chunk_tokens`` at sentence ends and ranked chunk by chunk, kept in document order.

    Args:
        coarse_keep: The coarse step keeps contexts holding this many times the budget.
        reorder: Order of user-given contexts in the output.
        rank_spread: Dynamic ratio: the best context keeps ``rate*(1+spread)``, the worst
            ``rate*(1-spread)``.
        contrast: Weight of the contrastive term in token scores (0 = plain conditioned
            self-information).
        chunk_tokens: Chunk size when one long context is ranked in pieces.
        dynamic: Strength of the per-segment dynamic ratio within a context.
        exact: Re-feed kept tokens rather than cut dropped ones out of the KV cache.
        **kwargs: See :class:`thresher.compression.base.BaseCompressor`.
    """

    name: ClassVar[str] = "longllmlingua"
    self_information: ClassVar[bool] = True

    def __init__(
        self,
        scorer: Any,
        counter: Any,
        *,
        coarse_keep: float = 2.0,
        reorder: Reorder = "sort",
        rank_spread: float = 0.3,
        contrast: float = 0.5,
        chunk_tokens: int = 160,
        dynamic: float = 0.5,
        exact: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(scorer, counter, **kwargs)
        self.coarse_keep = coarse_keep
        self.reorder = reorder
        self.rank_spread = rank_spread
        self.contrast = contrast
        self.chunk_tokens = chunk_tokens
        self.dynamic = dynamic
        self.exact = exact

    def select(self, docs: list[Doc], budget: int, prompt: Prompt) -> Selection:
        question = prompt.question
        if len(docs) == 1 and prompt.messages is None:
            return self._select_chunks(docs[0], budget, question)
        self.tokenize(docs)
        order, rates, baseline = self._plan(docs, budget, question, drop=prompt.messages is None)
        if prompt.messages is not None or self.reorder == "original":
            output = sorted(range(len(docs)))
        elif self.reorder == "two_ends":
            output = order[0::2] + order[1::2][::-1]
        else:
            output = list(order)
        masks, scores = self._tokens(
            [docs[k] for k in output],
            [rates[k] for k in output],
            [baseline[k] for k in output],
            question,
        )
        back = {k: i for i, k in enumerate(output)}
        kept = int((rates > 0).sum())
        note = f"coarse ranking kept {kept} of {len(docs)} contexts" if kept < len(docs) else None
        return Selection(
            [masks[back[k]] for k in range(len(docs))],
            [scores[back[k]] for k in range(len(docs))],
            order=None if output == sorted(output) else output,
            note=note,
        )

    def _select_chunks(self, doc: Doc, budget: int, question: str) -> Selection:
        """One long context: rank sentence-aligned chunks of it, keep them in document order."""
        self.tokenize([doc])
        chunks = self._chunk(doc)
        _, rates, baseline = self._plan(chunks, budget, question, drop=True)
        masks, scores = self._tokens(chunks, list(rates), baseline, question, separate=False)
        mask = np.concatenate(masks)
        kept = int((rates > 0).sum())
        note = f"coarse ranking kept {kept} of {len(chunks)} chunks" if kept < len(chunks) else None
        return Selection([mask], [np.concatenate(scores)], note=note)

    def _chunk(self, doc: Doc) -> list[Doc]:
        """Cut a doc into sub-docs of about ``chunk_tokens`` scorer tokens at sentence ends."""
        pieces = doc.units.pieces
        tokens_per_unit = np.bincount(doc.tok_unit, minlength=len(pieces))
        bounds, start, size = [], 0, 0
        for i, piece in enumerate(pieces):
            size += int(tokens_per_unit[i])
            end_of_sentence = ends_sentence(piece) or "\n" in piece[1:]
            if size >= self.chunk_tokens and end_of_sentence or size >= 2 * self.chunk_tokens:
                bounds.append((start, i + 1))
                start, size = i + 1, 0
        if start < len(pieces):
            bounds.append((start, len(pieces)))
        chunks = []
        for a, b in bounds:
            sel = (doc.tok_unit >= a) & (doc.tok_unit < b)
            units = Units(doc.units.text, pieces[a:b], doc.units.starts[a:b], doc.units.forced[a:b])
            chunks.append(
                Doc(
                    doc.part,
                    units,
                    doc.costs[a:b],
                    doc.forced[a:b],
                    [t for t, s in zip(doc.ids, sel, strict=True) if s],
                    doc.tok_unit[sel] - a,
                )
            )
        return chunks

    def _plan(
        self, docs: list[Doc], budget: int, question: str, *, drop: bool
    ) -> tuple[list[int], np.ndarray, list[np.ndarray]]:
        """Rank docs by contrastive question log-prob; give each a rate by rank.

        Returns the ranking (best first), each doc's rate (0 for dropped docs) and each doc's
        question-free token self-information, which the same forward pass yields for free.
        """
        q_ids = self.scorer.encode("\n\n" + question + RESTRICT) if question else []
        sequences = [d.ids + q_ids for d in docs] + ([q_ids] if q_ids else [])
        logprobs = self.scorer.logprobs_ids(sequences)
        baseline = [-lp[: len(d.ids)] for d, lp in zip(docs, logprobs, strict=False)]
        if q_ids:
            alone = float(logprobs[-1].mean())
            gain = np.array(
                [
                    float(lp[len(d.ids) :].mean()) - alone
                    for d, lp in zip(docs, logprobs, strict=False)
                ]
            )
        else:  # no question: fall back to LLMLingua's perplexity ranking
            gain = np.array([float(b.mean()) if len(b) else 0.0 for b in baseline])
        order = [int(k) for k in np.argsort(-gain, kind="stable")]
        keep = np.ones(len(docs), dtype=bool)
        if drop:
            keep[:] = False
            held = 0.0
            for k in order:
                if held >= self.coarse_keep * budget:
                    break
                keep[k] = True
                held += float(docs[k].costs.sum())
        kept = [k for k in order if keep[k]]
        by_rank = rank_rates(len(kept), 1.0, self.rank_spread)
        costs = np.array([float(docs[k].costs.sum()) for k in kept])
        forced_dropped = sum(
            float(d.costs[d.forced].sum()) for d, k in zip(docs, keep, strict=True) if not k
        )
        # Scale the rank profile so the kept docs spend exactly the budget.
        scale = max(0.0, budget - forced_dropped) / max(float((by_rank * costs).sum()), 1.0)
        rates = np.zeros(len(docs))
        for k, r in zip(kept, by_rank, strict=True):
            rates[k] = min(1.0, r * scale)
        return order, rates, baseline

    def _tokens(
        self,
        docs: list[Doc],
        rates: list[float],
        baseline: list[np.ndarray],
        question: str,
        *,
        separate: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Iterative compression with the question in the KV cache and contrastive scores."""
        free = {id(d): b for d, b in zip(docs, baseline, strict=True)}
        weight = self.contrast

        def score(doc: Doc, lo: int, hi: int, si: np.ndarray) -> np.ndarray:
            # Positive where the question made the token more predictable, i.e. relevant.
            gain = free[id(doc)][lo:hi] - si
            return si + weight * gain

        prefix = self.scorer.encode(question + "\n\n") if question else []
        return compress_iteratively(
            self.scorer,
            docs,
            rates,
            prefix=prefix,
            segment_tokens=self.segment_tokens,
            dynamic=self.dynamic,
            exact=self.exact,
            token_score=score if question and weight else None,
            separator=self.scorer.encode("\n\n") if separate else (),
        )
