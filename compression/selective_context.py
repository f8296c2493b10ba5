"""Selective Context (Li et al., 2023, "Compressing Context to Enhance Inference Efficiency of
Large Language Models", arXiv:2310.06201): drop the lexical units a small LM finds least
informative, by self-information, in one forward pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np

from thresher.compression.base import BaseCompressor, Doc, Selection
from thresher.compression.budget import greedy_keep
from thresher.compression.prompt import Prompt
from thresher.core.text import ends_sentence, sentence_groups

Level = Literal["phrase", "sentence"]
_CLAUSE_MARKS = frozenset(",;:、，；：)]")


def _ends_phrase(piece: str) -> bool:
    """Whether a piece ends a sentence or a clause: its trailing run of non-word characters
    holds a clause mark (a scan from the end, linear however long the run)."""
    if ends_sentence(piece):
        return True
    start = len(piece)
    while start and not (piece[start - 1].isalnum() or piece[start - 1] == "_"):
        start -= 1
    return not _CLAUSE_MARKS.isdisjoint(piece[start:])


# Where a lexical unit ends: clause punctuation for phrases, sentence ends for sentences.
_ENDS: dict[str, Callable[[str], bool]] = {"phrase": _ends_phrase, "sentence": ends_sentence}


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
    self_information: ClassVar[bool] = True

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
        if not len(doc.units):
            return np.zeros(1, dtype=np.int64)
        return sentence_groups(doc.units.pieces, _ENDS[self.level])
