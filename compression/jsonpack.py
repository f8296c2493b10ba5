"""Lossless JSON re-encoding: arrays of uniform objects with their keys written once.

An array of objects most of which share one set of keys (two or more of them) becomes
``{"$columns": [keys...], "$rows": [[values...], ...]}``: each row lists one object's values in
the order of ``$columns``; an object with other keys, and an elision marker (a string), stays
in ``$rows`` as it is. The result is compact JSON that parses, and :func:`unpack` gives the
original value back (tests check ``unpack(pack(v)) == v``). A value that already holds an
object with exactly the keys ``$columns`` and ``$rows`` is not re-encoded, so unpacking is
never ambiguous.
"""

from __future__ import annotations

import json
from typing import Any

COLUMNS = "$columns"
ROWS = "$rows"
TABLE_KEYS = frozenset({COLUMNS, ROWS})
# Values nested deeper than this are written as they are (the walk is recursive).
MAX_DEPTH = 100


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Compact JSON (no blanks between tokens), non-ASCII as it is."""
    return _ENCODER.encode(value)


def packable(value: Any) -> bool:
    """Whether :func:`pack` may re-encode ``value``: nested at most :data:`MAX_DEPTH` deep,
    and no object in it already looks like a table."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            if level >= MAX_DEPTH or node.keys() == TABLE_KEYS:
                return False
            stack += [(v, level + 1) for v in node.values() if isinstance(v, dict | list)]
        elif isinstance(node, list):
            if level >= MAX_DEPTH:
                return False
            stack += [(v, level + 1) for v in node if isinstance(v, dict | list)]
    return True


def pack(value: Any, is_marker: Any = None) -> Any:
    """``value`` with every array of uniform objects written as a table (see the module doc).
    ``is_marker(item)`` tells which string items are elision markers (kept as rows)."""
    if isinstance(value, dict):
        return {k: pack(v, is_marker) for k, v in value.items()}
    if not isinstance(value, list):
        return value
    columns = table_columns(value, is_marker)
    if columns is None:
        return [pack(v, is_marker) for v in value]
    keys = set(columns)
    rows = [
        [pack(v[c], is_marker) for c in columns]
        if isinstance(v, dict) and v.keys() == keys
        else pack(v, is_marker)
        for v in value
    ]
    return {COLUMNS: columns, ROWS: rows}


def table_columns(items: list[Any], is_marker: Any = None) -> list[str] | None:
    """The columns ``items`` are written under as a table, or None to keep them as they are:
    every item an object (or a marker), and at least two, and at least half of the objects,
    sharing one set of keys (the others stay objects among the rows)."""
    shapes: dict[frozenset[str], int] = {}
    first: dict[frozenset[str], list[str]] = {}
    records = 0
    for v in items:
        if isinstance(v, dict):
            records += 1
            shape = frozenset(v)
            shapes[shape] = shapes.get(shape, 0) + 1
            first.setdefault(shape, list(v))
        elif is_marker is None or not is_marker(v):
            return None
    if not shapes:
        return None
    shape, n = max(shapes.items(), key=lambda kv: kv[1])
    if n < 2 or 2 * n < records or not shape:
        return None
    return first[shape]


def unpack(value: Any) -> Any:
    """The value :func:`pack` was given (marker rows come back as the strings they are)."""
    if isinstance(value, list):
        return [unpack(v) for v in value]
    if not isinstance(value, dict):
        return value
    if value.keys() == TABLE_KEYS and isinstance(value[COLUMNS], list):
        columns = value[COLUMNS]
        return [
            dict(zip(columns, (unpack(c) for c in row), strict=True))
            if isinstance(row, list)
            else unpack(row)
            for row in value[ROWS]
        ]
    return {k: unpack(v) for k, v in value.items()}
