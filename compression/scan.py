"""Linear-time scanners for the shapes compression finds in request text.

Everything here runs in time linear in the text, whatever the text: no regular expression with
nested or overlapping quantifiers touches request text (a backtracking engine takes quadratic
time on inputs such as ``"ab." * 29000`` against an email pattern, and holds the GIL while it
does). Each scanner finds its candidates with single-quantifier patterns or plain string
methods and extends them by hand, so every character is looked at a bounded number of times.

- :func:`fences`: fenced code blocks (```` ``` ```` or ``~~~``), matched opener to closer with
  one pass over the lines.
- :func:`emails` and :func:`urls`: an ``@`` or a scheme found first, then grown outwards.
- :func:`json_values`: objects and arrays inside prose, found by one bracket-matching pass; only
  balanced candidates are decoded, each character by at most a few of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FENCE_MARKERS = ("```", "~~~")
_URL_START = re.compile(r"\b(?:https?://|ftp://|www\.)")
_URL_BODY = re.compile(r"[^\s<>\"'`]*")
_URL_TRAIL = ".,;:!?)]}"
_EMAILISH = re.compile(r"[\w.+@-]+")
_DOMAIN_RUN = re.compile(r"[\w.-]*")
_JSON_MARKS = re.compile(r'[\[\]{}"\n]')
# A JSON candidate inside others that failed to decode is still tried up to this depth, so a
# value inside a bracketed aside is found while each character is decoded a bounded number of
# times.
_JSON_RETRY_DEPTH = 3


@dataclass(frozen=True, slots=True)
class Fence:
    """A fenced code block: ``text[start:end]`` from the opening marker's line to the end of
    the closing one (its line break excluded); ``info`` is the opener's info string and
    ``text[body_start:body_end]`` the lines between."""

    start: int
    end: int
    info: str
    body_start: int
    body_end: int


def line_starts(text: str) -> list[int]:
    """The offset of every line's first character (the first is 0)."""
    starts = [0]
    find = text.find
    i = find("\n")
    while i >= 0:
        starts.append(i + 1)
        i = find("\n", i + 1)
    return starts


def fences(text: str) -> list[Fence]:
    """Fenced code blocks in order. An opener is a line whose first non-blank characters are a
    marker; it closes at the next line holding only the same marker (blanks around it). An
    opener with no closer after it is not a fence."""
    if "```" not in text and "~~~" not in text:
        return []
    starts = line_starts(text)
    ends = [s - 1 for s in starts[1:]] + [len(text)]
    openers: list[tuple[int, str, str]] = []  # (line, marker, info)
    closers: dict[str, list[int]] = {m: [] for m in FENCE_MARKERS}
    for n, (a, b) in enumerate(zip(starts, ends, strict=True)):
        line = text[a:b].lstrip(" \t")
        marker = line[:3]
        if marker not in closers:
            continue
        openers.append((n, marker, line[3:]))
        if not line[3:].strip(" \t\r"):
            closers[marker].append(n)
    out: list[Fence] = []
    seen = {m: 0 for m in FENCE_MARKERS}  # next unexamined closer per marker
    done = -1  # the last line inside a fence found so far
    for n, marker, info in openers:
        if n <= done:
            continue
        found = closers[marker]
        k = seen[marker]
        while k < len(found) and found[k] <= n:
            k += 1
        seen[marker] = k
        if k == len(found):
            continue
        close = found[k]
        out.append(Fence(starts[n], ends[close], info.strip(), starts[n + 1], starts[close]))
        done = close
    return out


def urls(text: str) -> list[tuple[int, int]]:
    """Web addresses (``http(s)://``, ``ftp://``, ``www.``) up to the first blank, quote or
    angle bracket, without trailing sentence punctuation."""
    out: list[tuple[int, int]] = []
    pos = 0
    while True:
        m = _URL_START.search(text, pos)
        if m is None:
            return out
        body = _URL_BODY.match(text, m.end())
        end = body.end() if body is not None else m.end()
        while end > m.end() and text[end - 1] in _URL_TRAIL:
            end -= 1
        if end > m.end():
            out.append((m.start(), end))
            pos = end
        else:
            pos = m.end()


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def emails(text: str) -> list[tuple[int, int]]:
    """Addresses ``local@domain.tld``: a run of word characters, dots, plus and minus signs
    holding an ``@``, cut at each ``@`` into a local part and at least two domain labels."""
    out: list[tuple[int, int]] = []
    for run in _EMAILISH.finditer(text):
        chunk = run.group()
        if "@" not in chunk:
            continue
        base = run.start()
        floor = 0  # where the next local part may begin: after the last "@" or address
        at = chunk.find("@")
        while at >= 0:
            nxt = chunk.find("@", at + 1)
            local = floor
            while local < at and not _is_word(chunk[local]):
                local += 1
            domain = _domain_end(chunk, at + 1, len(chunk) if nxt < 0 else nxt)
            if local < at and domain > at + 1:
                out.append((base + local, base + domain))
                floor = domain
            else:
                floor = at + 1
            at = nxt
    return out


def _domain_end(chunk: str, start: int, stop: int) -> int:
    """The end of a domain (two or more ``[\\w-]`` labels joined by dots) at ``start``, or
    ``start`` when there is none."""
    run = _DOMAIN_RUN.match(chunk, start, stop)
    labels: list[str] = []
    for label in (run.group() if run is not None else "").split("."):
        if not label:
            break
        labels.append(label)
    while labels:
        labels[-1] = labels[-1].rstrip("-")  # an address ends on a word character
        if labels[-1]:
            break
        labels.pop()
    if len(labels) < 2:
        return start
    return start + len(".".join(labels))


class TooDeep:
    """The value :func:`json_values` offers for a balanced candidate nested deeper than the
    JSON parser goes: it cannot be read, so it is kept whole rather than taken for prose."""

    def __repr__(self) -> str:
        return "TOO_DEEP"


TOO_DEEP = TooDeep()


def json_values(text: str, accept: Callable[[Any, int, int], bool]) -> list[tuple[int, int, Any]]:
    """``(start, end, value)`` of the objects and arrays in ``text`` that decode as JSON and
    that ``accept(value, start, end)`` takes, outermost first, none inside another.

    One pass pairs brackets (inside a bracket, a double quote opens a string only where JSON
    allows one: after ``[``, ``{``, ``,`` or ``:``; a line break inside a string or a
    mismatched bracket ends the candidates open there). Balanced candidates are decoded from
    the outside in; one inside a candidate that failed is tried only while fewer than
    :data:`_JSON_RETRY_DEPTH` failed ones hold it, so decoding stays linear. A candidate too
    deep to decode is offered as :data:`TOO_DEEP`.
    """
    if "[" not in text and "{" not in text:
        return []
    spans: list[tuple[int, int]] = []
    stack: list[int] = []
    in_string = False
    for m in _JSON_MARKS.finditer(text):
        p = m.start()
        c = text[p]
        if in_string:
            if c == "\n":
                in_string = False
                stack.clear()
            elif c == '"':
                k = p - 1
                while k >= 0 and text[k] == "\\":
                    k -= 1
                in_string = (p - 1 - k) % 2 == 1
            continue
        if c == '"':
            in_string = bool(stack) and _may_open_string(text, p)
        elif c in "[{":
            stack.append(p)
        elif c in "]}":
            if not stack:
                continue
            start = stack.pop()
            if (text[start] == "[") != (c == "]"):
                stack.clear()
                continue
            spans.append((start, p + 1))
    spans.sort(key=lambda s: (s[0], -s[1]))
    out: list[tuple[int, int, Any]] = []
    covered = 0
    failed: list[int] = []  # ends of the enclosing candidates that did not decode
    for start, end in spans:
        if start < covered:
            continue
        while failed and failed[-1] <= start:
            failed.pop()
        if len(failed) >= _JSON_RETRY_DEPTH:
            continue
        try:
            value = json.loads(text[start:end])
        except RecursionError:  # balanced, but deeper than the parser goes: one value, kept
            value = TOO_DEEP
        except ValueError:
            failed.append(end)
            continue
        if accept(value, start, end):
            out.append((start, end, value))
            covered = end
        else:
            failed.append(end)  # not wanted whole: what it holds may be
    return out


def _may_open_string(text: str, quote: int) -> bool:
    """Whether a double quote at ``quote`` can open a JSON string: the character before it,
    blanks skipped, is ``[``, ``{``, ``,`` or ``:``."""
    k = quote - 1
    while k >= 0 and text[k] in " \t\r\n":
        k -= 1
    return k >= 0 and text[k] in "[{,:"
