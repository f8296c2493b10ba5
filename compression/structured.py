"""Content by type: JSON compressed by its structure, code kept verbatim, prose left to the token
compressor.

A tool result or any JSON text is never cut token by token (that gives invalid JSON): its
keys and shape are kept, long arrays keep their first and last items and the entries that
stand out (errors, numeric outliers) with a count of what was left out in between, long
strings keep their head, and the output is compact JSON that parses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from thresher.compression.scan import fences, json_values

SegmentKind = Literal["prose", "code", "json"]

_ERROR_WORD = re.compile(r"(?i)\b(error|errors|exception|traceback|fail(ed|ure)?|fatal|panic)\b")
_ERROR_KEYS = ("error", "errors", "exception", "traceback", "stderr")
_ERROR_STATUS = re.compile(r"(?i)^(error|failed|failure|fatal|critical|exception|ko)$")
# (max array items kept, max string characters kept) tried in turn until the target is met.
SCHEDULE: tuple[tuple[int | None, int | None], ...] = (
    (None, None),
    (32, 600),
    (16, 400),
    (10, 240),
    (6, 160),
    (4, 100),
    (2, 60),
)


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
    """Cut a text into prose, fenced code and JSON (a whole-text JSON value, a fence whose body
    parses as JSON, or an object or array of at least :data:`MIN_INLINE_JSON` characters
    inside prose); the segments join back to ``text`` exactly. Linear in the text."""
    if parse_json(text) is not None:
        return [Segment("json", text)]
    out: list[Segment] = []
    pos = 0
    for f in fences(text):
        if f.start > pos:
            out += _inline_json(text[pos : f.start])
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
        out += _inline_json(text[pos:])
    return out


MIN_INLINE_JSON = 200


def _inline_json(text: str) -> list[Segment]:
    """Prose with the long JSON values inside it cut out as their own segments."""
    out: list[Segment] = []
    pos = 0
    for start, end, _ in json_values(text, _long_enough):
        if start > pos:
            out.append(Segment("prose", text[pos:start]))
        out.append(Segment("json", text[start:end]))
        pos = end
    if pos < len(text):
        out.append(Segment("prose", text[pos:]))
    return out


def _long_enough(value: Any, start: int, end: int) -> bool:
    return end - start >= MIN_INLINE_JSON


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def compress_json(text: str, target_tokens: int, count: Callable[[str], int]) -> str:
    """Shrink the JSON in ``text`` by structure until it fits ``target_tokens`` (or the
    smallest shape the schedule allows); the result parses. Text that is not JSON comes back
    unchanged."""
    value = parse_json(text)
    if value is None:
        return text
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    best = text
    for max_items, max_chars in SCHEDULE:
        candidate = lead + dumps(shrink(value, max_items, max_chars)) + trail
        if count(candidate) < count(best):
            best = candidate
        if count(best) <= target_tokens:
            break
    return best


def shrink(value: Any, max_items: int | None, max_chars: int | None) -> Any:
    """``value`` with every array over ``max_items`` elided in its middle and every string
    over ``max_chars`` cut to its head; keys, nesting and scalar types are kept."""
    if isinstance(value, dict):
        return {k: shrink(v, max_items, max_chars) for k, v in value.items()}
    if isinstance(value, list):
        if max_items is None or len(value) <= max_items:
            return [shrink(v, max_items, max_chars) for v in value]
        out: list[Any] = []
        last = -1
        for i in kept_indices(value, max_items):
            if i > last + 1:
                out.append(f"... {i - last - 1} more items ...")
            out.append(shrink(value[i], max_items, max_chars))
            last = i
        if last < len(value) - 1:
            out.append(f"... {len(value) - 1 - last} more items ...")
        return out
    if isinstance(value, str) and max_chars is not None and len(value) > max_chars:
        return value[:max_chars] + f"... (+{len(value) - max_chars} chars)"
    return value


def kept_indices(items: list[Any], max_items: int) -> list[int]:
    """First and last items, then error entries, then numeric outliers, within ``max_items``
    plus at most as many standouts again; in their original order."""
    head = max(1, (max_items + 1) // 2)
    tail = max(1, max_items - head)
    keep = set(range(head)) | set(range(len(items) - tail, len(items)))
    room = max(1, max_items)
    for i in [i for i, item in enumerate(items) if is_error(item)] + outliers(items):
        if room <= 0:
            break
        if i not in keep:
            keep.add(i)
            room -= 1
    return sorted(keep)


def is_error(item: Any) -> bool:
    """An entry that reports a failure: an error key with a value, an error status or level,
    or (for a string) an error word."""
    if isinstance(item, str):
        return bool(_ERROR_WORD.search(item))
    if not isinstance(item, dict):
        return False
    for key, value in item.items():
        name = str(key).lower()
        if name in _ERROR_KEYS and value not in (None, "", [], {}, False, 0):
            return True
        if name in ("status", "level", "severity", "state", "result", "outcome"):
            if isinstance(value, str) and _ERROR_STATUS.match(value.strip()):
                return True
            if name == "status" and isinstance(value, int) and not isinstance(value, bool):
                if value >= 400:  # an HTTP status
                    return True
        if name in ("ok", "success", "passed") and value is False:
            return True
    return False


def outliers(items: list[Any], z: float = 3.5) -> list[int]:
    """Indices of entries with a numeric field far from the field's median (robust z-score over
    the median absolute deviation), most extreme first."""
    fields: dict[str, list[tuple[int, float]]] = {}
    for i, item in enumerate(items):
        pairs = item.items() if isinstance(item, dict) else [("", item)]
        for key, value in pairs:
            if isinstance(value, int | float) and not isinstance(value, bool):
                fields.setdefault(str(key), []).append((i, float(value)))
    found: dict[int, float] = {}
    for values in fields.values():
        if len(values) < 5:
            continue
        xs = sorted(v for _, v in values)
        median = xs[len(xs) // 2]
        mad = sorted(abs(v - median) for v in xs)[len(xs) // 2]
        if mad == 0:
            # Most entries agree exactly: the few that differ are the outliers.
            odd = [(i, v) for i, v in values if v != median]
            if len(odd) * 20 <= len(values):
                for i, _ in odd:
                    found[i] = max(found.get(i, 0.0), z + 1)
            continue
        for i, v in values:
            score = 0.6745 * abs(v - median) / mad
            if score > z:
                found[i] = max(found.get(i, 0.0), score)
    return sorted(found, key=lambda i: -found[i])
