"""What may cross the wire as JSON, checked once for every way in and every backend.

Python's ``json`` accepts what no backend can take: a lone surrogate escape (``"\\ud800"``
decodes to a ``str`` that is not valid UTF-8, which orjson, tokenizers and tiktoken refuse),
integers of any size (orjson and most servers stop at 64 bits), ``NaN`` and ``Infinity``.
:func:`check_sendable` finds the first such value and names its field, so each way in can answer
a 4xx naming it instead of failing deep inside a tokenizer or a serializer.
"""

from __future__ import annotations

import math
from typing import Any

from thresher.core.errors import InputError

# The largest magnitude every backend here takes (signed 64-bit, what orjson and llama.cpp use).
INT_LIMIT = 2**63


def field_path(parts: list[str | int]) -> str:
    """``["messages", 0, "content"]`` -> ``messages[0].content``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def find_unsendable(value: Any, path: list[str | int] | None = None) -> tuple[str, str] | None:
    """The first value JSON cannot carry to a backend: ``(field, what is wrong)``, or None."""
    path = path or []
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return field_path(path), (
                f"is not valid UTF-8 text (a lone surrogate {value[exc.start]!r} at character "
                f"{exc.start}); send UTF-8, e.g. pair each \\ud8xx escape with its \\udcxx"
            )
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if -INT_LIMIT <= value < INT_LIMIT:
            return None
        return field_path(path), "is an integer beyond 64 bits; send a smaller number"
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return field_path(path), f"is {value}, which is not a JSON number; send a finite number"
    if isinstance(value, dict):
        for key, item in value.items():
            found = find_unsendable(key, path) or find_unsendable(item, [*path, str(key)])
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = find_unsendable(item, [*path, i])
            if found:
                return found
    return None


def check_sendable(value: Any, prefix: str | None = None) -> None:
    """Raise :class:`InputError` naming the first field no backend can take (see module)."""
    found = find_unsendable(value, [prefix] if prefix else None)
    if found is not None:
        where, what = found
        raise InputError(f"{where} {what}.", field=where)
