"""Budgets: resolving rate or target, sharing it out, and fitting the kept units to it."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from thresher.core.errors import InputError

DEFAULT_RATE = 0.5


def check_budget(rate: float | None, target_tokens: int | None) -> None:
    """Validate ``rate`` / ``target_tokens`` before any model is loaded."""
    resolve_target(1, rate, target_tokens)


def resolve_target(origin: int, rate: float | None, target_tokens: int | None) -> int:
    """The token budget for a prompt of ``origin`` tokens; validates ``rate`` and the target."""
    if rate is not None and target_tokens is not None:
        raise InputError(
            "Give rate or target_tokens, not both (rate is the fraction of tokens kept).",
            field="rate",
        )
    if target_tokens is not None:
        if isinstance(target_tokens, bool) or not isinstance(target_tokens, int):
            raise InputError(
                f"target_tokens must be a positive integer, got {target_tokens!r}.",
                field="target_tokens",
            )
        if target_tokens <= 0:
            raise InputError(
                f"target_tokens must be positive, got {target_tokens}; give the number of tokens "
                "the compressed prompt may use.",
                field="target_tokens",
            )
        return target_tokens
    check_rate(DEFAULT_RATE if rate is None else rate)
    return max(1, round(origin * (DEFAULT_RATE if rate is None else rate)))


def check_rate(rate: float) -> float:
    """``rate`` must be in (0, 1]: the fraction of tokens kept (0.33 is 3x compression)."""
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int | float)
        or math.isnan(rate)
        or not 0 < rate <= 1
    ):
        raise InputError(
            f"rate must be in (0, 1] (the fraction of tokens kept; 0.33 is 3x compression), "
            f"got {rate!r}.",
            field="rate",
        )
    return float(rate)


def greedy_keep(
    scores: np.ndarray, costs: np.ndarray, forced: np.ndarray, budget: float
) -> np.ndarray:
    """Keep forced units, then the units with the most score per token while they fit.

    A unit that would overflow is skipped and smaller ones are still tried, so the result lands
    within one unit of the budget (a greedy knapsack).
    """
    keep = forced.copy()
    left = budget - float(costs[forced].sum())
    density = scores / np.maximum(costs, 1)
    for i in np.argsort(-density, kind="stable"):
        if keep[i]:
            continue
        if costs[i] <= left:
            keep[i] = True
            left -= costs[i]
        if left <= 0:
            break
    return keep


def rank_rates(n: int, rate: float, spread: float) -> np.ndarray:
    """LongLLMLingua's dynamic ratio: the best-ranked context keeps ``rate * (1 + spread)`` of
    its tokens, the worst ``rate * (1 - spread)``, linearly in between."""
    if n == 1:
        return np.array([rate])
    steps = 1.0 - 2.0 * np.arange(n) / (n - 1)
    return np.clip(rate * (1.0 + spread * steps), 0.0, 1.0)


def fit_masks(
    masks: list[np.ndarray],
    scores: list[np.ndarray],
    costs: list[np.ndarray],
    forced: list[np.ndarray],
    target: int,
    count: Callable[[list[np.ndarray]], int],
    *,
    tolerance: float = 0.04,
    rounds: int = 5,
) -> int:
    """Adjust ``masks`` in place until ``count(masks)`` is within ``tolerance`` of ``target``.

    Unit costs are counted one unit at a time, but a tokenizer may merge across unit
    boundaries; the real count of the assembled prompt decides, and the lowest-scoring kept units
    are dropped (or the best dropped ones added) to close the gap. Returns the final count.
    """
    actual = count(masks)
    for _ in range(rounds):
        gap = target - actual
        if abs(gap) <= tolerance * target:
            break
        flat = [
            (float(s[i] / max(c[i], 1)), d, int(i))
            for d, (m, s, c, f) in enumerate(zip(masks, scores, costs, forced, strict=True))
            for i in np.flatnonzero((~m if gap > 0 else m) & ~f)
        ]
        if not flat:
            break
        flat.sort(reverse=gap > 0)
        moved = 0.0
        for _, d, i in flat:
            if moved >= abs(gap):
                break
            masks[d][i] = gap > 0
            moved += costs[d][i]
        actual = count(masks)
    return actual


def segment_bounds(unit_of_token: Sequence[int], size: int) -> list[tuple[int, int]]:
    """Cut a token sequence into segments of about ``size`` tokens, never inside a unit."""
    bounds = []
    start = 0
    n = len(unit_of_token)
    while start < n:
        end = min(start + size, n)
        while end < n and unit_of_token[end] == unit_of_token[end - 1]:
            end += 1
        bounds.append((start, end))
        start = end
    return bounds
