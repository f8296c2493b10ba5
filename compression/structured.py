"""Content by type: JSON compressed by its structure, code by whole lines, prose left to the
token compressor.

A tool result or any JSON text is never cut token by token (that gives invalid JSON): it is
first re-encoded losslessly (compact, uniform arrays of objects as tables), and only if that is
still over the budget are items elided, keeping what the question names, the items most about
it, errors, outliers, first and last, each elided run marked with a count and a handle
(:mod:`thresher.compression.jsonselect`). The output is JSON that parses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from thresher.compression.code import compress_code
from thresher.compression.elision import Elided, Shrunk
from thresher.compression.jsonpack import dumps, pack, packable
from thresher.compression.jsonselect import select_json
from thresher.compression.markup import code_blocks
from thresher.compression.scan import fences, json_values

SegmentKind = Literal["prose", "code", "json"]


@dataclass(slots=True)
class Segment:
    """A piece of a message's text; joined in order, the segments give the text back."""

    kind: SegmentKind
    text: str


def parse_json(text: str) -> Any | None:
    """The object or array ``text`` holds (surrounding whitespace allowed), else None."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):  # nesting past the parser's depth is not JSON to us
        return None
    return value if isinstance(value, dict | list) else None


def split_segments(text: str) -> list[Segment]:
    """Cut a text into prose, code and JSON; the segments join back to ``text`` exactly.

    JSON is a whole-text JSON value, a fence whose body parses as JSON, or an object or array
    of at least :data:`MIN_INLINE_JSON` characters inside prose; code is a fenced block or a
    run of lines that reads as code (:func:`thresher.compression.markup.code_blocks`). Linear
    in the text."""
    if parse_json(text) is not None:
        return [Segment("json", text)]
    out: list[Segment] = []
    pos = 0
    for f in fences(text):
        if f.start > pos:
            out += _loose(text[pos : f.start])
        body = text[f.body_start : f.body_end]
        if parse_json(body) is not None and f.info.lower() in ("", "json"):
            out += [
                Segment("code", text[f.start : f.body_start]),
                Segment("json", body),
                Segment("code", text[f.body_end : f.end]),
            ]
        else:
            out.append(Segment("code", text[f.start : f.end]))
        pos = f.end
    if pos < len(text):
        out += _loose(text[pos:])
    return out


MIN_INLINE_JSON = 200


def _loose(text: str) -> list[Segment]:
    """Text outside fences: long JSON values, then code blocks, cut out of the prose."""
    out: list[Segment] = []
    pos = 0
    for start, end, _ in json_values(text, _long_enough):
        out += _code_or_prose(text[pos:start])
        out.append(Segment("json", text[start:end]))
        pos = end
    out += _code_or_prose(text[pos:])
    return out


def _code_or_prose(text: str) -> list[Segment]:
    out: list[Segment] = []
    pos = 0
    for start, end in code_blocks(text):
        if start > pos:
            out.append(Segment("prose", text[pos:start]))
        out.append(Segment("code", text[start:end]))
        pos = end
    if pos < len(text):
        out.append(Segment("prose", text[pos:]))
    return out


def _long_enough(value: Any, start: int, end: int) -> bool:
    return end - start >= MIN_INLINE_JSON


@dataclass(slots=True)
class Prose:
    """A prose segment left for the token compressor: its text, tokens and target."""

    text: str
    tokens: int
    target: int


def shrink_segments(
    text: str,
    question: str,
    count: Callable[[str], int],
    goal: Callable[[int], int],
    min_prose_tokens: int,
) -> tuple[list[str | Prose], list[Elided]]:
    """``text`` cut into segments (:func:`split_segments`), each with its target ``goal(tokens)``:
    JSON and code compressed by structure now (to text, with what they elided), prose of at
    least ``min_prose_tokens`` left as :class:`Prose`, shorter prose and blanks as they are."""
    pieces: list[str | Prose] = []
    elided: list[Elided] = []
    for seg in split_segments(text):
        if not seg.text.strip():
            pieces.append(seg.text)
            continue
        tokens = count(seg.text)
        if seg.kind == "prose":
            keep = tokens < min_prose_tokens
            pieces.append(seg.text if keep else Prose(seg.text, tokens, goal(tokens)))
            continue
        shrink = compress_json if seg.kind == "json" else compress_code
        shrunk = shrink(seg.text, goal(tokens), count, question, tokens)
        pieces.append(shrunk.text)
        elided += shrunk.elided
    return pieces, elided


def compress_json(
    text: str,
    target_tokens: int,
    count: Callable[[str], int],
    question: str = "",
    tokens: int | None = None,
) -> Shrunk:
    """Shrink the JSON in ``text`` to ``target_tokens`` by its structure; the result parses.

    The target holds in tokens and in the same share of the original's characters. First
    losslessly: compact separators and arrays of uniform objects as tables
    (:mod:`thresher.compression.jsonpack`). Only if that is still over the target, items are
    elided by what ``question`` asks (:mod:`thresher.compression.jsonselect`), each run of them
    replaced by a marker with a handle. Text that is not JSON, or is nested past
    :data:`thresher.compression.jsonpack.MAX_DEPTH`, comes back unchanged. ``tokens`` is
    ``count(text)`` when the caller knows it."""
    value = parse_json(text)
    if tokens is None:
        tokens = count(text)
    if value is None or tokens <= target_tokens or not packable(value):
        return Shrunk(text)
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    lossless = dumps(pack(value))
    lossless_tokens = count(lossless)
    if lossless_tokens <= target_tokens and len(lossless) * tokens <= len(text) * target_tokens:
        return Shrunk(lead + lossless + trail)
    shrunk = select_json(
        value, question, target_tokens, count, (lossless, lossless_tokens), (len(text), tokens)
    )
    return Shrunk(lead + shrunk.text + trail, shrunk.elided)
