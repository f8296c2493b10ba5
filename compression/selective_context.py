"""Selective Context (Li et al., 2023, "Compressing Context to Enhance Inference Efficiency of
Large Language Models", arXiv:2310.06201): drop the lexical units a small LM finds least
informative, by self-information, in one forward pass."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import numpy as np

from thresher.compression.base import BaseCompressor, Doc, Selection
from thresher.compression.budget import greedy_keep
from thresher.compression.prompt import Prompt

Level = Literal["phrase", "sentence"]
# Where a lexical unit ends: clause punctuation for phrases, sentence punctuation for sentences.
_ENDS: dict[str, re.Pattern[str]] = {
    "phrase": re.compile(r"[,;:.!?。！？、，；：)\]]\W*$|\n"),
    "sentence": re.compile(r"[.!?。！？]\W*$|\n"),
}


class SelectiveContext(BaseCompressor):
    """Self-information pruning of phrases or sentences: a cheap baseline.

    Every context is scored once, contexts batched together; a lexical unit's
    self-information is the sum over its tokens, and units are kept by information per target
    token until the budget is spent.

    Args:
        level: ``phrase`` (clauses between punctuation) or ``sentence``.
        **kwargs: See :class:`thresher.compression.base.BaseCompressor`.
    """

    name: ClassVar[str] = "selective-context"

    def __init__(self, scorer: Any, counter: Any, *, level: Level = "phrase", **kwargs: Any):
        super().__init__(scorer, counter, **kwargs)
        if level not in _ENDS:
            from thresher.core.errors import InputError

            raise InputError(f"level is {level!r}; use one of {sorted(_ENDS)}.", field="level")
        self.level = level

    def select(self, docs: list[Doc], budget: int, prompt: Prompt) -> Selection:
        self.tokenize(docs)
        logprobs = self.scorer.logprobs_ids([d.ids for d in docs])
        groups = [self._groups(d) for d in docs]
        # One knapsack over every lexical unit of every context.
        info = np.concatenate(
            [
                np.bincount(g, weights=d.unit_sums(-lp), minlength=g.max() + 1)
                for d, g, lp in zip(docs, groups, logprobs, strict=True)
            ]
        )
        offsets = np.cumsum([0] + [int(g.max()) + 1 for g in groups])
        cost = np.concatenate(
            [
                np.bincount(g, weights=d.costs, minlength=g.max() + 1)
                for d, g in zip(docs, groups, strict=True)
            ]
        )
        free_budget = budget - sum(float(d.costs[d.forced].sum()) for d in docs)
        # Forced units keep only themselves, not the rest of their phrase.
        partial = cost - np.concatenate(
            [
                np.bincount(g, weights=d.costs * d.forced, minlength=g.max() + 1)
                for d, g in zip(docs, groups, strict=True)
            ]
        )
        keep = greedy_keep(info, np.maximum(partial, 0), np.zeros(len(info), bool), free_budget)
        masks, scores = [], []
        density = info / np.maximum(cost, 1)
        for k, (d, g) in enumerate(zip(docs, groups, strict=True)):
            chosen = keep[offsets[k] + g]
            masks.append(chosen | d.forced)
            scores.append(density[offsets[k] + g])
        return Selection(masks, scores)

    def _groups(self, doc: Doc) -> np.ndarray:
        """The lexical unit (phrase or sentence) of each unit of ``doc``."""
        ends = _ENDS[self.level]
        out = np.zeros(max(len(doc.units), 1), dtype=np.int64)
        group = 0
        for i, piece in enumerate(doc.units.pieces):
            if "\n" in piece and i:  # a line break starts a new unit
                group += 1
            out[i] = group
            if ends.search(piece.rstrip("\n")):
                group += 1
        return out[: len(doc.units)] if len(doc.units) else out
