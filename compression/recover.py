"""Subsequence recovery (LongLLMLingua, Jiang et al., 2023, arXiv:2310.06839, sec. 4.4).

A model reading a compressed prompt may quote it in its compressed form ("Tom saw car red
3 pm"). Recovery finds each maximal run of the answer's words that matches consecutive kept units
of the compressed prompt and replaces it with the original text those units span, dropped words
included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thresher.compression.units import iter_units

if TYPE_CHECKING:
    from thresher.compression.result import CompressionResult


def _norm(piece: str) -> str:
    return piece.strip().lower()


def recover(result: CompressionResult, response: str) -> str:
    """``response`` with every quoted run of compressed units restored to the original wording.

    Runs shorter than two units are left alone: a single shared word is no evidence of quoting.
    """
    starts, pos = [], 0
    for piece in result.tokens:
        starts.append(pos)
        pos += len(piece)
    original = result.original
    kept = [i for i, k in enumerate(result.kept_mask) if k and result.tokens[i].strip()]
    keys = [_norm(result.tokens[i]) for i in kept]
    first: dict[str, list[int]] = {}
    for j, key in enumerate(keys):
        first.setdefault(key, []).append(j)
    words = [m.group() for m in iter_units(response)]
    out, w = [], 0
    while w < len(words):
        best_len, best_j = 0, -1
        for j in first.get(_norm(words[w]), []):
            n = 0
            while w + n < len(words) and j + n < len(keys) and _norm(words[w + n]) == keys[j + n]:
                n += 1
            if n > best_len:
                best_len, best_j = n, j
        if best_len >= 2:
            a, b = kept[best_j], kept[best_j + best_len - 1]
            lead = words[w][: len(words[w]) - len(words[w].lstrip())]
            out.append(lead + original[starts[a] : starts[b] + len(result.tokens[b])].strip())
            w += best_len
        else:
            out.append(words[w])
            w += 1
    return "".join(out)
