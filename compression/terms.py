"""What a question names, and how much a piece of content is about it.

A question names values in two strengths. **Strong** ones identify: quoted strings, numbers,
identifiers (with digits, underscores, inner capitals, ``@`` or ``-``), and capitalised words
and phrases that do not merely open a sentence. Content that holds a strong value the question
names is kept by the structure compressors whatever the budget. **Weak** ones are the other
content words: they rank content by relevance (BM25 over the items being ranked, Robertson
and Zaragoza, 2009) but keep nothing by themselves.

Texts are compared as sequences of lowercase word tokens (digit runs without leading zeros),
so ``"ORD-0057"`` matches ``order ORD-57`` and ``Alice Smith`` matches ``"alice smith"``, and a
phrase never matches across two separate values (:func:`bag_text` puts a bar between them).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"\w+")
_COMPOUND = re.compile(r"[\w.@:/+-]+")
_QUOTED = (
    re.compile(r'"([^"\n]{1,200})"'),
    re.compile(r"“([^”\n]{1,200})”"),
    re.compile(r"`([^`\n]{1,200})`"),
    re.compile(r"(?<!\w)'([^'\n]{1,200})'(?!\w)"),
)
STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be been before being below
    between both but by can could did do does doing down during each few for from further get
    give had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our out over own please same
    she should show so some such tell than that the their them then there these they this
    those through to too under until up very was we were what when where which while who whom
    why will with would you your find list return look value values record records item items
    entry entries field fields data named called name""".split()
)


def tokens(text: str) -> list[str]:
    """Lowercase word tokens; a digit run loses its leading zeros (``0057`` is ``57``)."""
    words = _WORD.findall(text.lower())
    for i, word in enumerate(words):
        if word[0] == "0" and word.isdigit():
            words[i] = word.lstrip("0") or "0"
    return words


def phrase(text: str) -> str:
    """``text`` as a space-joined token sequence (what :func:`bag_text` is searched for)."""
    return " ".join(tokens(text))


def bag_text(values: Iterable[str]) -> str:
    """Searchable text of several values: each as a token sequence, set apart by bars, so a
    phrase is found as `` a b `` inside one value and never across two."""
    return " " + " | ".join(phrase(v) for v in values) + " "


@dataclass(frozen=True, slots=True)
class Terms:
    """What a question names and asks about.

    ``named`` holds one group per named value, its alternatives as token phrases from the
    most to the least specific (``"ORD-0057"``: ``ord 57`` then ``57``; ``Alice Smith``: the
    full name, then each part): a matcher takes the first alternative that finds anything.
    ``weak`` are the question's content words."""

    named: tuple[tuple[str, ...], ...]
    weak: tuple[str, ...]

    @classmethod
    def of(cls, question: str) -> Terms:
        question = question[:4000]  # a question, not a document: bounded work
        groups: list[list[str]] = []
        for pattern in _QUOTED:
            groups += [[m.group(1)] for m in pattern.finditer(question)]
        for m in _COMPOUND.finditer(question):
            word = m.group().strip(".:/+-")
            if _identifying(word):
                groups.append([word, *(t for t in tokens(word) if t.isdigit())])
        groups += _capitalised(question)
        named: dict[tuple[str, ...], None] = {}
        for group in groups:
            alternatives = tuple(p for p in dict.fromkeys(phrase(g) for g in group) if p)
            if alternatives:
                named[alternatives] = None
        weak = [t for t in tokens(question) if t not in STOPWORDS and (len(t) > 2 or t.isdigit())]
        return cls(tuple(named), tuple(dict.fromkeys(weak)))

    def __bool__(self) -> bool:
        return bool(self.named or self.weak)

    def phrases(self) -> list[str]:
        """Every alternative of every named value."""
        return [p for group in self.named for p in group]

    def named_in(self, text: str) -> bool:
        """Whether ``text`` (a :func:`bag_text`) holds any named value."""
        return any(f" {p} " in text for p in self.phrases())

    def identify(self, bags: Sequence[str], limit: int) -> set[int]:
        """Indices of the ``bags`` (:func:`bag_text` of each item) that a named value
        identifies: per value, the first alternative that is in at least one and at most
        ``limit`` of them (a value in more describes rather than names)."""
        found: set[int] = set()
        for group in self.named:
            for alternative in group:
                needle = f" {alternative} "
                holders = [i for i, bag in enumerate(bags) if needle in bag]
                if 0 < len(holders) <= limit:
                    found.update(holders)
                    break
        return found


def _identifying(word: str) -> bool:
    """A token that identifies rather than describes: digits, an underscore, an inner
    capital (camelCase), an ``@``, or a letter-digit-dash compound."""
    if len(word) < 1:
        return False
    if any(ch.isdigit() for ch in word) or "_" in word or "@" in word:
        return True
    return any(ch.isupper() for ch in word[1:]) and any(ch.islower() for ch in word)


def _capitalised(question: str) -> list[list[str]]:
    """Capitalised words and runs of them ("Alice Smith"), each run as a group (the run, then
    its words), leaving out stopwords and a word that only opens a sentence."""
    out: list[list[str]] = []
    run: list[str] = []
    last_end = -1
    for m in _WORD.finditer(question):
        word = m.group()
        gap = question[max(last_end, 0) : m.start()]
        opens = last_end < 0 or "\n" in gap or gap.rstrip()[-1:] in (".", "!", "?", ":")
        capital = word[:1].isupper() and word.lower() not in STOPWORDS
        if capital and (not opens or _names_anyway(word)):
            if run and gap != " ":
                out += _group(run)
                run = []
            run.append(word)
        else:
            out += _group(run)
            run = []
        last_end = m.end()
    out += _group(run)
    return out


def _names_anyway(word: str) -> bool:
    """A sentence's first word that still names something: all capitals (an acronym)."""
    return len(word) > 1 and word.isupper()


def _group(run: list[str]) -> list[list[str]]:
    words = [w for w in run if len(w) > 2 or w.isupper()]
    if not words:
        return []
    return [[" ".join(run), *words]] if len(run) > 1 else [words]


def bm25(
    terms: Sequence[str], docs: Sequence[Counter[str]], k1: float = 1.2, b: float = 0.75
) -> list[float]:
    """BM25 score of each document (a token counter) for ``terms``."""
    n = len(docs)
    if not n or not terms:
        return [0.0] * n
    lengths = [sum(d.values()) for d in docs]
    mean = sum(lengths) / n or 1.0
    scores = [0.0] * n
    for term in terms:
        holders = [i for i, d in enumerate(docs) if term in d]
        if not holders:
            continue
        idf = math.log(1 + (n - len(holders) + 0.5) / (len(holders) + 0.5))
        for i in holders:
            tf = docs[i][term]
            scores[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / mean))
    return scores
