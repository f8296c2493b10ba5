"""The character model's n-gram counts are exact: the same as counting every n-gram by hand."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from thresher.selection.quality.charlm import ALPHABET, BASE, count_ngrams


def counted_by_hand(texts: list[str], order: int) -> np.ndarray:
    rows = []
    for n in range(1, order + 1):
        counts: Counter[int] = Counter()
        for text in texts:
            ids = [1 + ord(c) % ALPHABET for c in text.lower()]
            for end in range(n - 1, len(ids)):
                # The newest character is the lowest digit.
                counts[sum(ids[end - k] * BASE**k for k in range(n))] += 1
        rows.extend((n, code, counts[code]) for code in sorted(counts))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


@pytest.mark.parametrize("order", [1, 2, 4, 5])
def test_counts_match_a_direct_count(order):
    rng = random.Random(order)
    alphabet = "ab cdé\nΣσ漢字"
    for _ in range(200):
        # Short texts too: texts shorter than the order have only lower-order n-grams.
        texts = [
            "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 2, 3, 4, 7, 25])))
            for _ in range(rng.randint(1, 6))
        ]
        got = count_ngrams(texts, order)
        want = counted_by_hand([t for t in texts if t], order)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)


def test_no_text_no_counts():
    assert count_ngrams(["", ""]).shape == (0, 3)
