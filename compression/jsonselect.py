"""Question-aware elision inside JSON: keep what the question names, then what is most about it.

The value is seen as a tree of **collections**: arrays of at least :data:`MIN_ITEMS` items and
objects of at least :data:`MIN_ENTRIES` entries, at any depth. Each item of a collection gets
a tier, and items are kept tier by tier until the character budget is spent:

0. items holding a value the question names (:class:`thresher.compression.terms.Terms`:
   ids, numbers, quoted strings, names) that identifies a few of the collection's items
   (at most :data:`NAMED_SHARE` of them, at least three): always kept, whatever the budget,
   with every item that encloses them;
1. items of collections inside a named item (the rest of the asked record);
2. errors (an error key or status, an error word);
3. the first and the last item (the shape of the data);
4. items the question's words are about (BM25 over the collection's items);
5. numeric outliers;
6. the rest, in order.

An item is only considered once the item holding its collection is kept, so a nested
collection's first, last and relevant items compete only inside kept records. Each run of
elided items becomes one marker with a handle (:mod:`thresher.compression.elision`). When the
named items alone overflow the budget, long strings of the other kept items are cut to their
head (again with a handle). Costs are estimated in characters of the packed output
(:mod:`thresher.compression.jsonpack`); the result is counted and the budget tightened until
it fits the token target and the same share of the original's characters.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from thresher.compression.elision import Elided, Shrunk, elide, marker
from thresher.compression.jsonpack import dumps, pack, table_columns
from thresher.compression.terms import Terms, bag_text, bm25, tokens

MIN_ITEMS = 4
MIN_ENTRIES = 12
NAMED_SHARE = 0.1
MARKER_CHARS = 46  # a marker with its handle, quotes and comma
STRING_CAPS = (2000, 800, 300, 120)
_SCALARS_PER_ITEM = 400  # an item's text for matching: its first scalars
_ERROR_WORD = re.compile(r"(?i)\b(error|errors|exception|traceback|fail(ed|ure)?|fatal|panic)\b")
_ERROR_KEYS = ("error", "errors", "exception", "traceback", "stderr")
_ERROR_STATUS = re.compile(r"(?i)^(error|failed|failure|fatal|critical|exception|ko)$")


@dataclass(slots=True)
class Collection:
    """An array (``keys`` None) or a many-keyed object whose items may be elided."""

    node: Any
    path: str
    parent: int  # the item that holds it, -1 at the top
    keys: list[str] | None = None
    items: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Item:
    coll: int
    pos: int
    parent: int
    full: int = 0  # characters of the item as packed
    own: int = 0  # the same, less the items of collections inside it
    tier: int = 6
    score: float = 0.0
    named: bool = False
    children: list[int] = field(default_factory=list)  # collections directly inside


class Selector:
    """The collections and items of one JSON value, scored for one question."""

    def __init__(self, value: Any, terms: Terms, packed_chars: int) -> None:
        self.value = value
        self.terms = terms
        self.colls: list[Collection] = []
        self.items: list[Item] = []
        self.by_id: dict[int, int] = {}
        self.holds: set[int] = set()  # containers with a collection inside
        self._walk(value, "$", -1)
        self.top = sum(1 for c in self.colls if c.parent < 0)
        self.root_chars = packed_chars  # the whole value, packed
        for c in self.colls:
            self._score(c)

    # -- building ------------------------------------------------------------------------------

    def _walk(self, node: Any, path: str, parent: int) -> bool:
        """Record the collections in ``node``; True when it is or holds one."""
        if isinstance(node, list):
            pairs: Any = enumerate(node)
            is_coll = len(node) >= MIN_ITEMS
        elif isinstance(node, dict):
            pairs = node.items()
            is_coll = len(node) >= MIN_ENTRIES
        else:
            return False
        ci = -1
        if is_coll:
            ci = len(self.colls)
            self.colls.append(
                Collection(node, path, parent, list(node) if isinstance(node, dict) else None)
            )
            self.by_id[id(node)] = ci
            if parent >= 0:
                self.items[parent].children.append(ci)
        holds = False
        for pos, (key, child) in enumerate(pairs):
            owner = parent
            if ci >= 0:
                owner = len(self.items)
                self.items.append(Item(ci, pos, parent))
                self.colls[ci].items.append(owner)
            if isinstance(child, dict | list):
                where = f"{path}[{key}]" if isinstance(key, int) else _child_path(path, key)
                holds = self._walk(child, where, owner) or holds
        if holds:
            self.holds.add(id(node))
        return holds or ci >= 0

    def _score(self, c: Collection) -> None:
        values = list(c.node.values()) if c.keys is not None else c.node
        keyed = c.keys is not None
        columns = None if keyed else table_columns(values)
        bags, counts = [], []
        key_chars = sum(len(dumps(k)) + 1 for k in columns) if columns else 0
        for pos, v in enumerate(values):
            scalars = _scalars(v)
            if keyed:
                scalars.insert(0, str(c.keys[pos]))  # type: ignore[index]
            words = [tokens(s) for s in scalars]
            bags.append(" " + " | ".join(" ".join(w) for w in words) + " ")  # as bag_text
            counts.append(Counter(t for w in words for t in w))
            item = self.items[c.items[pos]]
            item.full = len(dumps(pack(v) if _holds_list(v) else v)) + 1
            if keyed:
                item.full += len(dumps(c.keys[pos])) + 1  # type: ignore[index]
            elif columns and v.keys() == set(columns):
                item.full -= key_chars
        n = len(values)
        for i in self.terms.identify(bags, max(3, math.ceil(NAMED_SHARE * n))):
            self.items[c.items[i]].named = True
        scores = bm25(self.terms.weak, counts)
        odd = set(outliers(values))
        inside = c.parent >= 0 and self.items[c.parent].tier <= 1
        for pos, ii in enumerate(c.items):
            item = self.items[ii]
            item.score = scores[pos]
            if item.named:
                item.tier = 0
            elif inside:
                item.tier = 1
            elif is_error(values[pos]):
                item.tier = 2
            elif pos in (0, n - 1):
                item.tier = 3
            elif item.score > 0:
                item.tier = 4
            elif pos in odd:
                item.tier = 5

    def finish_costs(self) -> None:
        """Each item's own cost: its packed size less the items nested in it."""
        for item in self.items:
            item.own = item.full - sum(
                self.items[j].full for c in item.children for j in self.colls[c].items
            )

    # -- choosing ------------------------------------------------------------------------------

    def select(self, budget: float) -> list[bool]:
        """Which items to keep within ``budget`` characters (named items always)."""
        kept = [False] * len(self.items)
        used = self.root_chars - sum(
            self.items[i].full for c in self.colls if c.parent < 0 for i in c.items
        )
        heap: list[tuple[int, float, int, int]] = []

        def open_(ii: int) -> None:
            for c in self.items[ii].children:
                for j in self.colls[c].items:
                    heapq.heappush(heap, self._key(j))

        def keep(ii: int) -> float:
            chain = []
            j = ii
            while j >= 0 and not kept[j]:
                chain.append(j)
                j = self.items[j].parent
            for j in reversed(chain):
                kept[j] = True
                open_(j)
            return sum(self.items[j].own for j in chain)

        for c in self.colls:
            if c.parent < 0:
                for j in c.items:
                    heapq.heappush(heap, self._key(j))
        for ii, item in enumerate(self.items):
            if item.named:
                used += keep(ii)
        while heap:
            *_, ii = heapq.heappop(heap)
            if kept[ii]:
                continue
            parent = self.items[ii].parent
            if parent >= 0 and not kept[parent]:
                continue
            cost = self.items[ii].own
            if used + cost <= budget:
                used += keep(ii)
        return kept

    def _key(self, ii: int) -> tuple[int, float, int, int]:
        item = self.items[ii]
        return (item.tier, -item.score, item.pos, ii)

    # -- writing -------------------------------------------------------------------------------

    def render(self, kept: list[bool], cap: int | None) -> tuple[Any, list[Elided]]:
        """The value with elided runs as markers (and strings over ``cap`` cut)."""
        elided: list[Elided] = []
        return self._render(self.value, "$", kept, cap, elided), elided

    def _render(self, node: Any, path: str, kept: list[bool], cap: int | None, out: list) -> Any:
        ci = self.by_id.get(id(node))
        if ci is not None:
            return self._render_collection(self.colls[ci], kept, cap, out)
        if cap is None and id(node) not in self.holds:
            return node  # nothing inside changes
        if isinstance(node, dict):
            return {
                k: self._render(v, _child_path(path, k), kept, cap, out) for k, v in node.items()
            }
        if isinstance(node, list):
            return [self._render(v, f"{path}[{i}]", kept, cap, out) for i, v in enumerate(node)]
        if isinstance(node, str) and cap is not None and len(node) > cap + MARKER_CHARS:
            if not self.terms.named_in(bag_text([node])):
                cut = elide("chars", f"{path}[{cap}:]", node[cap:])
                out.append(cut)
                return node[:cap] + marker(len(node) - cap, "chars", cut.handle)
        return node

    def _render_collection(
        self, c: Collection, kept: list[bool], cap: int | None, out: list
    ) -> Any:
        keyed = c.keys is not None
        values = list(c.node.values()) if keyed else c.node
        parts: list[tuple[str | None, Any]] = []
        run: list[int] = []

        def flush() -> None:
            if not run:
                return
            a, b = run[0], run[-1] + 1
            if keyed:
                original = dumps({c.keys[p]: values[p] for p in run})  # type: ignore[index]
                gone = elide("entries", f"{c.path}{{{a}:{b}}}", original)
                parts.append((marker(len(run), "entries", gone.handle), None))
            else:
                gone = elide("items", f"{c.path}[{a}:{b}]", dumps(values[a:b]))
                parts.append((None, marker(len(run), "items", gone.handle)))
            out.append(gone)
            run.clear()

        for pos, ii in enumerate(c.items):
            if not kept[ii]:
                run.append(pos)
                continue
            flush()
            key = c.keys[pos] if keyed else None  # type: ignore[index]
            where = _child_path(c.path, key) if keyed else f"{c.path}[{pos}]"
            parts.append((key, self._render(values[pos], where, kept, cap, out)))
        flush()
        if keyed:
            return dict(parts)
        return [v for _, v in parts]


def select_json(
    value: Any,
    question: str,
    target: int,
    count: Callable[[str], int],
    lossless: tuple[str, int],
    origin: tuple[int, int],
) -> Shrunk:
    """Elide inside ``value`` until its packed JSON is within ``target`` tokens, and within the
    same share of the original's characters, keeping what ``question`` names (see the module
    doc). ``lossless`` is the packed text of the whole value and its tokens (over the
    target), ``origin`` the original's characters and tokens; the result is the first try
    that fits, else the smallest."""
    selector = Selector(value, Terms.of(question), len(lossless[0]))
    selector.finish_costs()
    max_chars = origin[0] * target / max(origin[1], 1)
    start = min(target * len(lossless[0]) / max(lossless[1], 1), max_chars)
    best, best_tokens = Shrunk(lossless[0]), lossless[1]
    for cap in (None, *STRING_CAPS):
        budget = start
        last: list[bool] | None = None
        for _ in range(4):
            kept = selector.select(budget - MARKER_CHARS * 2 * selector.top)
            if kept == last:
                break  # only named items are left: a tighter budget changes nothing
            last = kept
            rendered, elided = selector.render(kept, cap)
            text = dumps(pack(rendered, is_elision_marker))
            tokens_now = count(text)
            if tokens_now < best_tokens:
                best, best_tokens = Shrunk(text, elided), tokens_now
            if tokens_now <= target and len(text) <= max_chars:
                return Shrunk(text, elided)
            budget *= 0.95 * min(target / tokens_now, max_chars / len(text))
    return best


def is_elision_marker(item: Any) -> bool:
    return isinstance(item, str) and item.startswith("… ") and item.endswith("] …")


def _scalars(value: Any) -> list[str]:
    """The first scalars of ``value`` as text (strings, numbers written as JSON writes them,
    integral floats as integers)."""
    out: list[str] = []
    stack = [value]
    while stack and len(out) < _SCALARS_PER_ITEM:
        node = stack.pop()
        if isinstance(node, dict):
            stack += reversed(list(node.values()))
        elif isinstance(node, list):
            stack += reversed(node)
        elif isinstance(node, str):
            out.append(node)
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, float) and node.is_integer():
            out.append(str(int(node)))
        else:
            out.append(str(node))
    return out


def _holds_list(value: Any) -> bool:
    """Whether packing could change ``value``: it holds an array (checked one level down)."""
    if isinstance(value, list):
        return True
    return isinstance(value, dict) and any(isinstance(v, list) for v in value.values())


def _child_path(path: str, key: Any) -> str:
    key = str(key)
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{dumps(key)}]"


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
