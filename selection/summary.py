"""What the report needs from the rows, as statistics that merge across shards.

Each shard's write task counts its rows' fate (rows dropped per step, the commonest reasons with
where each first occurred, rows per rule), sketches each score, sums the output observers'
statistics and keeps the first few examples per group; the driver merges the shards' summaries
in shard order and never sees a row. Merging in shard order makes the result the same as one
pass over the rows in position order, with two bounded approximations stated where they live:
reasons are counted over each shard's commonest :data:`KEEP_REASONS`, and score quantiles and
histograms come from buckets 1/256 of a value wide.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KEEP_REASONS = 200  # distinct reasons a summary keeps per step (the report shows 20)
SKETCH_SHIFT = np.uint64(44)  # keep sign, exponent and 8 mantissa bits of each value


def rule_of(reason: str) -> str:
    """The rule a drop reason names: ``"non_answer: response ..."`` -> ``non_answer``,
    ``"minhash duplicate of x"`` -> ``minhash duplicate``, ``"length < 5"`` -> ``length < 5``."""
    head = reason.split(":", 1)[0] if ":" in reason else reason.split(" of ", 1)[0]
    return head.strip()


def rule_counts(reasons: Any) -> dict[str, int]:
    """Rows dropped per rule (a row that several rules drop counts for each of them)."""
    counts: Counter[str] = Counter()
    for reason in reasons:
        counts.update({rule_of(part) for part in str(reason).split("; ")})
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))  # ties by name


@dataclass
class ScoreSketch:
    """A score's values counted in buckets of 1/256 of their magnitude (the top 20 bits of each
    float64), apart for kept and dropped rows, with the exact count, sum, min and max. Sketches
    of shards add up; quantiles and histograms read the buckets' midpoints."""

    kept: Counter[int] = field(default_factory=Counter)
    dropped: Counter[int] = field(default_factory=Counter)
    count: int = 0
    total: float = 0.0
    lo: float = np.inf
    hi: float = -np.inf

    def add(self, values: np.ndarray, kept: np.ndarray) -> None:
        finite = np.isfinite(values)
        for mask, bucket in ((finite & kept, self.kept), (finite & ~kept, self.dropped)):
            keys, counts = np.unique(values[mask].view(np.uint64) >> SKETCH_SHIFT,
                                     return_counts=True)  # fmt: skip
            bucket.update(dict(zip(keys.tolist(), counts.tolist(), strict=True)))
        shown = values[finite]
        if shown.size:
            self.count += int(shown.size)
            self.total += float(shown.sum())
            self.lo, self.hi = min(self.lo, float(shown.min())), max(self.hi, float(shown.max()))

    def merge(self, other: ScoreSketch) -> None:
        self.kept.update(other.kept)
        self.dropped.update(other.dropped)
        self.count += other.count
        self.total += other.total
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)

    def _points(self, bucket: Counter[int]) -> tuple[np.ndarray, np.ndarray]:
        keys = np.array(sorted(bucket), dtype=np.uint64)
        mids = ((keys << SKETCH_SHIFT) | (np.uint64(1) << (SKETCH_SHIFT - np.uint64(1))))
        values = np.clip(mids.view(np.float64), self.lo, self.hi)
        return values, np.array([bucket[k] for k in keys.tolist()], dtype=np.int64)

    def quantile(self, q: float) -> float:
        values, counts = self._points(self.kept + self.dropped)
        order = np.argsort(values, kind="stable")
        cum = np.cumsum(counts[order])
        return float(values[order][np.searchsorted(cum, q * cum[-1])])

    def histogram(self, bins: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(edges, kept counts, dropped counts) over ``bins`` equal bins from min to max."""
        edges = np.linspace(self.lo, self.hi, bins + 1) if self.hi > self.lo else \
            np.array([self.lo - 0.5, self.hi + 0.5])  # fmt: skip
        out = []
        for bucket in (self.kept, self.dropped):
            values, counts = self._points(bucket)
            out.append(np.histogram(values, bins=edges, weights=counts)[0])
        return edges, out[0], out[1]

    def to_json(self) -> dict[str, Any]:
        return {"kept": list(self.kept.items()), "dropped": list(self.dropped.items()),
                "count": self.count, "total": self.total, "lo": self.lo, "hi": self.hi}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreSketch:
        kept, dropped = (Counter({k: n for k, n in data[b]}) for b in ("kept", "dropped"))
        return cls(kept, dropped, data["count"], data["total"], data["lo"], data["hi"])


@dataclass
class ShardSummary:
    """Everything the report needs from some shards' rows (see the module docstring)."""

    rows: int = 0
    kept: int = 0
    rejects: int = 0
    dropped: dict[int, int] = field(default_factory=dict)  # step -> rows
    reasons: dict[int, dict[str, list[int]]] = field(default_factory=dict)  # -> [count, first]
    rules: dict[int, Counter[str]] = field(default_factory=dict)
    sketches: dict[str, ScoreSketch] = field(default_factory=dict)
    observed: dict[str, np.ndarray] = field(default_factory=dict)  # observer -> summed stats
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0  # task time, summed
    peak_mb: float = 0.0  # the largest worker's peak resident memory

    def count_rows(self, pos: np.ndarray, drop_step: np.ndarray, reasons: np.ndarray) -> None:
        """Count a shard's final row state (rows in position order)."""
        self.rows += len(pos)
        self.kept += int((drop_step < 0).sum())
        for step in np.unique(drop_step[drop_step >= 0]).tolist():
            rows = np.flatnonzero(drop_step == step)
            self.dropped[step] = self.dropped.get(step, 0) + len(rows)
            found: dict[str, list[int]] = {}
            for i in rows.tolist():
                entry = found.setdefault(str(reasons[i]), [0, int(pos[i])])
                entry[0] += 1
            self._merge_reasons(step, found)
            self.rules.setdefault(step, Counter()).update(rule_counts(reasons[rows]))

    def _merge_reasons(self, step: int, found: dict[str, list[int]]) -> None:
        mine = self.reasons.setdefault(step, {})
        for reason, (count, first) in found.items():
            entry = mine.setdefault(reason, [0, first])
            entry[0] += count
            entry[1] = min(entry[1], first)
        if len(mine) > KEEP_REASONS:
            self.reasons[step] = dict(sorted(mine.items(), key=_commonest)[:KEEP_REASONS])

    def observe(self, name: str, stats: np.ndarray) -> None:
        self.observed[name] = self.observed[name] + stats if name in self.observed else stats

    def example(self, group: str, item: dict[str, Any], cap: int) -> bool:
        """Keep ``item`` as one of the first ``cap`` examples of ``group``; False if full."""
        bucket = self.examples.setdefault(group, [])
        if len(bucket) >= cap:
            return False
        bucket.append(item)
        return True

    def merge(self, other: ShardSummary, caps: dict[str, int]) -> None:
        """Add a later shard's summary (``caps``: examples kept per group, by group)."""
        self.rows += other.rows
        self.kept += other.kept
        self.rejects += other.rejects
        for step, n in other.dropped.items():
            self.dropped[step] = self.dropped.get(step, 0) + n
        for step, found in other.reasons.items():
            self._merge_reasons(step, found)
        for step, counts in other.rules.items():
            self.rules.setdefault(step, Counter()).update(counts)
        for name, sketch in other.sketches.items():
            self.sketches.setdefault(name, ScoreSketch()).merge(sketch)
        for name, stats in other.observed.items():
            self.observe(name, stats)
        for group, items in other.examples.items():
            for item in items:
                if not self.example(group, item, caps.get(group, caps["dropped"])):
                    break
        self.seconds += other.seconds
        self.peak_mb = max(self.peak_mb, other.peak_mb)

    def top_reasons(self, step: int, n: int) -> dict[str, int]:
        """The ``n`` commonest reasons of ``step`` (ties: the one seen first)."""
        ranked = sorted(self.reasons.get(step, {}).items(), key=_commonest)[:n]
        return {reason: count for reason, (count, _) in ranked}

    def step_rules(self, step: int) -> dict[str, int]:
        counts = self.rules.get(step, Counter())
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "kept": self.kept, "rejects": self.rejects,
            "dropped": list(self.dropped.items()),
            "reasons": [[s, list(r.items())] for s, r in self.reasons.items()],
            "rules": [[s, list(c.items())] for s, c in self.rules.items()],
            "sketches": {k: v.to_json() for k, v in self.sketches.items()},
            "observed": {k: v.tolist() for k, v in self.observed.items()},
            "examples": self.examples, "seconds": self.seconds, "peak_mb": self.peak_mb,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardSummary:
        return cls(
            rows=data["rows"], kept=data["kept"], rejects=data["rejects"],
            dropped={int(s): n for s, n in data["dropped"]},
            reasons={int(s): dict(r) for s, r in data["reasons"]},
            rules={int(s): Counter(dict(c)) for s, c in data["rules"]},
            sketches={k: ScoreSketch.from_json(v) for k, v in data["sketches"].items()},
            observed={k: np.array(v, dtype=np.float64) for k, v in data["observed"].items()},
            examples=data["examples"], seconds=data["seconds"], peak_mb=data["peak_mb"],
        )  # fmt: skip


def _commonest(item: tuple[str, list[int]]) -> tuple[int, int]:
    return -item[1][0], item[1][1]
