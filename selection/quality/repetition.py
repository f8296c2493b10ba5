"""Repetition statistics of Gopher's rules (Rae et al., 2021): the shortest repeating unit of a
text and the share of characters in duplicated word n-grams."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def minimal_period(text: str) -> int:
    """Length of the shortest unit whose repetition spells ``text`` (KMP failure function)."""
    n = len(text)
    fail = [0] * n
    k = 0
    for i in range(1, n):
        while k and text[i] != text[k]:
            k = fail[k - 1]
        if text[i] == text[k]:
            k += 1
        fail[i] = k
    return n - fail[-1] if n else 0


def ngram_fractions(
    tokens: Sequence[str], n: int, *, top: bool = True, dup: bool = True
) -> tuple[float, float]:
    """Gopher's repetition statistics for word n-grams of ``tokens``: (characters in the most
    frequent duplicated n-gram, characters covered by any duplicated n-gram), both as fractions
    of the characters of all words; only those asked for are computed (0.0 for the other)."""
    total = sum(len(w) for w in tokens)
    if total == 0 or len(tokens) < n:
        return 0.0, 0.0
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(grams)
    top_frac = dup_frac = 0.0
    if top:
        gram, most = counts.most_common(1)[0]
        top_frac = sum(len(w) for w in gram) * most / total if most > 1 else 0.0
    if dup:
        # Tokens covered by an n-gram seen twice: starts of repeated n-grams, spread n wide.
        starts = np.array([counts[g] > 1 for g in grams], dtype=np.int64)
        covered = np.convolve(starts, np.ones(n, dtype=np.int64))[: len(tokens)] > 0
        sizes = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        dup_frac = int(sizes[covered].sum()) / total
    return top_frac, dup_frac
