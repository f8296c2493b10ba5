"""Where sentences end: the one rule every sentence-aware step uses (the classifier's windows,
LLMLingua-2's and Selective Context's sentence units, LongLLMLingua's chunks, a user turn's
question).

A sentence ends at a sentence mark (``.``, ``!``, ``?`` and their full-width forms), after any
closing punctuation that follows it (quotes, brackets: ``."``, ``?)``), where whitespace or the
end of the text comes next. A line break ends a sentence too; callers that cut text into pieces
say how (:func:`sentence_groups`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

SENTENCE_MARKS = ".!?。！？"
_ENDS = re.compile(rf"[{SENTENCE_MARKS}][^\w\s]*\s*$")
_BREAK = re.compile(rf"[{SENTENCE_MARKS}][^\w\s]*(?=\s|$)")


def ends_sentence(piece: str) -> bool:
    """Whether ``piece`` (a word, a token, a run of punctuation) ends a sentence."""
    return _ENDS.search(piece) is not None


def sentence_ends(text: str, start: int = 0) -> list[int]:
    """Positions in ``text`` (from ``start``) just after each sentence end."""
    return [m.end() for m in _BREAK.finditer(text, start)]


def sentence_groups(
    pieces: Sequence[str], ends: Callable[[str], bool] = ends_sentence
) -> np.ndarray:
    """The group (sentence, by default) each piece of a cut-up text belongs to, numbered in
    order: a piece for which ``ends`` holds closes its group, and a line break starts a new one
    (unless the group holds only whitespace so far)."""
    out = np.zeros(len(pieces), dtype=np.int64)
    group = 0
    for i, piece in enumerate(pieces):
        if "\n" in piece and i and out[i - 1] == group and pieces[i - 1].strip():
            group += 1
        out[i] = group
        if ends(piece.rstrip("\n")):
            group += 1
    return out
