"""Cutting text into the units compression keeps or drops, and finding what must never change.

A unit is a word, a run of punctuation, or a single CJK character, each carrying the whitespace
before it, so that joining any subsequence of units gives text whose kept parts are byte-for-byte
slices of the original. A protected span (code, a JSON value, a URL, a number or date, Markdown
structure, a speaker label, a user-forced string or regex match) becomes one forced unit that is
never dropped or altered.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from thresher.compression.markup import code_blocks, markdown_spans, speaker_labels
from thresher.compression.scan import TOO_DEEP, emails, fences, json_values, urls
from thresher.core.errors import InputError

# Han ideographs (with extensions and compatibility forms) and kana: written without spaces, so
# each character is its own unit. Hangul is space-delimited and is treated as words.
_CJK = (
    "\u2e80-\u2fdf\u3005\u3006\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
# Every non-blank character starts exactly one of the three kinds, so the leading blanks never
# backtrack; blanks at the very end form a unit of their own (``\Z``; an empty match is skipped).
UNIT_PATTERN = re.compile(rf"\s*(?:[{_CJK}]|[^\W{_CJK}]+(?:['’][^\W{_CJK}]+)*|[^\w\s{_CJK}]+|\Z)")
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DATE = re.compile(
    rf"\b(?:{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?(?:,?\s+\d{{4}})?)\b"
)
# Numbers with their signs, separators, decimals, units of time (12:30) and ISO or slashed dates;
# separators a number ends with are cut off by hand (no second quantifier to backtrack into).
_NUMBER = re.compile(r"(?<![\w.])[-+]?\$?\d[\d,./:-]*")


@dataclass(frozen=True, slots=True)
class ProtectOptions:
    """Which spans are kept verbatim: fenced and unfenced code, JSON values, URLs and emails,
    numbers and dates, Markdown structure (headings, list markers, table pipes, link targets,
    images) and transcripts' speaker labels (:mod:`thresher.compression.markup`).
    ``force_tokens`` are literal strings, ``force_patterns`` regular expressions; both are user
    additions to the built-in kinds."""

    code: bool = True
    json: bool = True
    urls: bool = True
    numbers: bool = True
    markdown: bool = True
    speakers: bool = True
    force_tokens: tuple[str, ...] = ()
    force_patterns: tuple[str, ...] = ()

    def compiled(self) -> list[re.Pattern[str]]:
        """The user patterns, compiled; a bad one is an :class:`InputError` naming it."""
        out = [re.compile(re.escape(t)) for t in self.force_tokens if t]
        for i, pattern in enumerate(self.force_patterns):
            try:
                out.append(re.compile(pattern))
            except re.error as exc:
                raise InputError(
                    f"force_patterns[{i}] {pattern!r} is not a valid regular expression ({exc}).",
                    field=f"force_patterns[{i}]",
                ) from None
        return out


@dataclass(slots=True)
class Units:
    """A text cut into units: ``pieces`` join back to the text; ``forced`` marks protected ones."""

    text: str
    pieces: list[str]
    starts: list[int]
    forced: list[bool]
    costs: list[int] = field(default_factory=list)  # target-model tokens per piece

    def __len__(self) -> int:
        return len(self.pieces)


def protected_spans(text: str, options: ProtectOptions) -> list[tuple[int, int]]:
    """Character ranges of ``text`` that compression must keep byte for byte, merged. Every
    built-in kind is found in time linear in the text (:mod:`thresher.compression.scan`)."""
    spans: list[tuple[int, int]] = []
    if options.code:
        spans += _through_line_end(text, [(f.start, f.end) for f in fences(text)])
        spans += _through_line_end(text, code_blocks(text))
    if options.markdown:
        spans += _through_line_end(text, markdown_spans(text))
    if options.speakers:
        spans += speaker_labels(text)
    if options.json:
        spans += [(a, b) for a, b, _ in json_values(text, _worth_protecting)]
    if options.urls:
        spans += urls(text)
        spans += emails(text)
    if options.numbers:
        spans += [m.span() for m in _DATE.finditer(text)]
        spans += _numbers(text)
    for pattern in options.compiled():
        spans += [m.span() for m in pattern.finditer(text) if m.end() > m.start()]
    spans.sort()
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _through_line_end(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans that end a line take its line break along, so that what follows a heading, a
    table row or a code block starts a line of its own even when the words after it go."""
    return [(a, b + 1) if text.startswith("\n", b) else (a, b) for a, b in spans]


def _worth_protecting(value: object, start: int, end: int) -> bool:
    """A JSON value kept as one unit: an object with a key, an array of two items or more, or
    a value nested too deep to read (kept as it is rather than cut as prose)."""
    if value is TOO_DEEP:
        return True
    return (isinstance(value, dict) and bool(value)) or (isinstance(value, list) and len(value) > 1)


def _numbers(text: str) -> list[tuple[int, int]]:
    out = []
    for m in _NUMBER.finditer(text):
        end = m.start() + len(m.group().rstrip(",./:-"))
        if text.startswith("%", end):
            end += 1
        out.append((m.start(), end))
    return out


def iter_units(text: str, start: int = 0, end: int | None = None) -> Iterator[re.Match[str]]:
    """The units of ``text[start:end]`` in order (see :data:`UNIT_PATTERN`)."""
    for m in UNIT_PATTERN.finditer(text, start, len(text) if end is None else end):
        if m.end() > m.start():
            yield m


def split_units(text: str, options: ProtectOptions) -> Units:
    """Cut ``text`` into units; each protected span is one forced unit."""
    pieces: list[str] = []
    starts: list[int] = []
    forced: list[bool] = []

    def cut(a: int, b: int) -> None:
        for m in iter_units(text, a, b):
            pieces.append(m.group())
            starts.append(m.start())
            forced.append(False)

    pos = 0
    for a, b in protected_spans(text, options):
        # The whitespace before a protected span travels with it, as with any unit.
        ws = a
        while ws > pos and text[ws - 1].isspace():
            ws -= 1
        cut(pos, ws)
        pieces.append(text[ws:b])
        starts.append(ws)
        forced.append(True)
        pos = b
    cut(pos, len(text))
    return Units(text, pieces, starts, forced)


def unit_of_chars(units: Units, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """For each token (by its character offsets), the index of the unit it starts in."""
    import bisect

    return [max(0, bisect.bisect_right(units.starts, a) - 1) for a, _ in offsets]
