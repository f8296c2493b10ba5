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
# Runs of punctuation (neither word characters nor whitespace). A sentence ends where such a run
# holds a sentence mark and whitespace or the end of the text follows it. Scanning maximal runs
# keeps this linear whatever the text: a pattern such as ``[.!?][^\w\s]*(?=\s|$)`` restarts
# at every mark of a long run that a word follows, quadratic on ``"." * n + "a"``.
_RUN = re.compile(r"[^\w\s]+")
_MARKS = frozenset(SENTENCE_MARKS)


def ends_sentence(piece: str) -> bool:
    """Whether ``piece`` (a word, a token, a run of punctuation) ends a sentence: its last
    characters before any trailing whitespace are punctuation holding a sentence mark."""
    body = piece.rstrip()
    start = len(body)
    while start and _is_punctuation(body[start - 1]):
        start -= 1
    return not _MARKS.isdisjoint(body[start:])


def sentence_ends(text: str, start: int = 0) -> list[int]:
    """Positions in ``text`` (from ``start``) just after each sentence end."""
    size = len(text)
    return [
        m.end()
        for m in _RUN.finditer(text, start)
        if (m.end() == size or text[m.end()].isspace()) and not _MARKS.isdisjoint(m.group())
    ]


def _is_punctuation(ch: str) -> bool:
    return not (ch.isspace() or ch.isalnum() or ch == "_")


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
