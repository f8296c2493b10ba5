"""Iterative token-level compression (LLMLingua, Jiang et al., 2023, arXiv:2310.05736, sec. 3.3).

Each segment is scored given the *compressed* text before it, not the original: the kept
tokens of earlier segments are committed to a :class:`thresher.core.scoring.ScoringStream`, whose KV
cache carries them forward, so the whole prompt costs about one forward pass over its tokens
plus one over what is kept. Segment budgets are dynamic: a segment whose tokens are more
surprising than the running average keeps more, and what one segment over- or under-spends is
carried to the next, so the total lands on the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from thresher.compression.base import Doc
from thresher.compression.budget import greedy_keep, segment_bounds

TokenScore = Callable[[Doc, int, int, np.ndarray], np.ndarray]
"""(doc, first token, end token, self-information of those tokens) -> their keep scores."""


def compress_iteratively(
    scorer: object,
    docs: Sequence[Doc],
    rates: Sequence[float],
    *,
    prefix: Sequence[int] = (),
    segment_tokens: int = 256,
    dynamic: float = 0.5,
    token_score: TokenScore | None = None,
    separator: Sequence[int] = (),
    exact: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Keep masks and unit scores for ``docs``, each compressed to about its ``rate``.

    Args:
        scorer: A TokenScorer; docs must already carry their scorer ``ids``.
        docs: The contexts in the order the compressed prompt will present them.
        rates: Fraction of each doc's tokens to keep (0 keeps only protected units).
        prefix: Scorer ids every doc is conditioned on (an instruction, a question).
        segment_tokens: Tokens scored per step.
        dynamic: How strongly a segment's surprise moves its share (0 = uniform ratio).
        token_score: Turns self-information into keep scores (default: itself).
        separator: Ids committed between docs.
        exact: Re-feed kept tokens instead of cutting dropped ones out of the KV cache.
    """
    stream = scorer.stream(prefix, exact=exact)  # type: ignore[attr-defined]
    masks: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    carry = 0.0
    seen_si = 0.0
    seen_tokens = 0
    for n, (doc, rate) in enumerate(zip(docs, rates, strict=True)):
        n_units = len(doc.units)
        mask = doc.forced.copy()
        unit_scores = np.zeros(n_units)
        if n and separator:
            stream.commit(separator)
        if rate <= 0 or not doc.ids:
            unit_scores[:] = -np.inf
            carry -= float(doc.costs[mask].sum())
            masks.append(mask)
            scores.append(unit_scores)
            continue
        bounds = segment_bounds(doc.tok_unit.tolist(), segment_tokens)
        first_units = [0] + [int(doc.tok_unit[lo]) for lo, _ in bounds[1:]] + [n_units]
        for k, (lo, hi) in enumerate(bounds):
            u0, u1 = first_units[k], first_units[k + 1]
            si = -stream.score(doc.ids[lo:hi])
            seen_si += float(si.sum())
            seen_tokens += len(si)
            values = token_score(doc, lo, hi, si) if token_score else si
            seg_scores = np.bincount(doc.tok_unit[lo:hi] - u0, weights=values, minlength=u1 - u0)[
                : u1 - u0
            ]
            unit_scores[u0:u1] = seg_scores
            costs = doc.costs[u0:u1]
            # Surprising segments carry more of the prompt's information: give them more room.
            share = (float(si.mean()) / max(seen_si / seen_tokens, 1e-6)) ** dynamic
            budget = rate * float(np.clip(share, 0.5, 2.0)) * float(costs.sum()) + carry
            keep = greedy_keep(seg_scores, costs, doc.forced[u0:u1], budget)
            carry = budget - float(costs[keep].sum())
            mask[u0:u1] = keep
            stream.keep(keep[doc.tok_unit[lo:hi] - u0])
        masks.append(mask)
        scores.append(unit_scores)
    return masks, scores
