"""Global selections at a barrier: an exact distributed top-k, and a gather for other selectors.

A :class:`thresher.selection.registry.RankSelector` keeps, column by column, the rows with the
highest keys (ties to the earlier position), never one an earlier column took. Each shard
computes its alive rows' keys itself (a key depends on the row's scores and its index among all
alive rows, which the driver's per-shard counts give); the driver finds the exact cut with a
radix select: four rounds of 65,536-bucket histograms of the keys' order-preserving 64-bit
images, each round narrowing the prefix of the k-th largest key, then, when several rows share
that key, four rounds over their positions. The driver holds histograms, never keys; the cut
(one key and one position per column) is the whole verdict, and the next task that loads a
shard applies it. :func:`top_indices` is the same rule in memory.

Selectors that are not a top-k (:class:`ScoreSelector`, :class:`thresher.core.steps.Selector`)
are gathered on the driver, as their protocols require, and keep a list of chosen positions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from thresher.selection.engine import Job
    from thresher.selection.state import ShardState

DIGIT = 16
BUCKETS = 1 << DIGIT
ROUNDS = 64 // DIGIT
TOP = np.uint64(1 << 63)


def ordered(keys: np.ndarray) -> np.ndarray:
    """Keys as unsigned integers in the same order (NaN ranks with -inf, last)."""
    keys = np.where(np.isnan(keys), -np.inf, np.asarray(keys, dtype=np.float64)) + 0.0
    bits = keys.view(np.uint64)
    return np.where(bits >= TOP, ~bits, bits | TOP)


def top_indices(keys: np.ndarray, quota: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Indices (sorted) of the ``quota`` highest ``keys`` among ``eligible``, ties to the
    lower index."""
    idx = np.arange(len(keys)) if eligible is None else np.flatnonzero(eligible)
    order = np.lexsort((idx, ~ordered(keys[idx])))
    return np.sort(idx[order[: max(quota, 0)]])


@dataclass
class RankVerdict:
    """A top-k selection: per column the cut (ordered key, last position at that key)."""

    seed: int
    alive: int
    starts: dict[int, int]  # shard -> index of its first alive row among all alive rows
    columns: list[tuple[int, int] | None]

    def save(self, path: Any) -> None:
        from thresher.core.files import atomic_write_text

        atomic_write_text(path, json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Any) -> RankVerdict:
        data = json.loads(path.read_text())
        starts = {int(k): v for k, v in data["starts"].items()}
        cuts = [None if c is None else (int(c[0]), int(c[1])) for c in data["columns"]]
        return cls(data["seed"], data["alive"], starts, cuts)


def _shard_keys(step: Any, state: ShardState, verdict: RankVerdict, shard: int,
                column: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(alive rows, whether each is still eligible for ``column``, its ordered keys)."""
    alive = np.flatnonzero(state.alive)
    scores = {name: values[alive] for name, values in state.scores.items()}
    start = verdict.starts.get(shard, 0)
    pos = state.pos[alive]
    eligible = np.ones(len(alive), dtype=bool)
    for c in range(column + 1):
        keys = ordered(np.asarray(step.rank_keys(scores, c, start, verdict.alive, verdict.seed)))
        cut = verdict.columns[c] if c < len(verdict.columns) else None
        if c == column:
            return alive, eligible, keys
        if cut is not None:
            t = np.uint64(cut[0])
            eligible &= ~((keys > t) | ((keys == t) & (pos <= cut[1])))
    raise AssertionError("unreachable")


def apply_rank(state: ShardState, step: Any, index: int, verdict: RankVerdict, shard: int) -> None:
    """Drop the shard's alive rows the top-k did not take."""
    alive = np.flatnonzero(state.alive)
    taken = np.zeros(len(alive), dtype=bool)
    for column, cut in enumerate(verdict.columns):
        if cut is not None:
            _, eligible, keys = _shard_keys(step, state, verdict, shard, column)
            t = np.uint64(cut[0])
            taken |= eligible & ((keys > t) | ((keys == t) & (state.pos[alive] <= cut[1])))
    state.drop(alive[~taken], index, f"not selected by {step.name}")


def rank_round(job: Job, steps: list[Any], item: tuple[Any, ...]) -> np.ndarray:
    """One shard's histogram for one radix round (a task)."""
    from thresher.selection.tasks import load_state

    pass_index, index, shard, verdict, column, stage, prefix, depth, cut = item
    state = load_state(job, steps, job.shards[shard], pass_index, strings=False, barrier=False)
    alive, eligible, keys = _shard_keys(steps[index], state, verdict, shard, column)
    if stage == "pos":
        values = state.pos[alive].astype(np.uint64)
        eligible &= keys == np.uint64(cut)
    else:
        values = keys
    if depth:
        eligible &= (values >> np.uint64(64 - DIGIT * depth)) == np.uint64(prefix)
    digits = (values[eligible] >> np.uint64(64 - DIGIT * (depth + 1))) & np.uint64(BUCKETS - 1)
    return np.bincount(digits.astype(np.int64), minlength=BUCKETS)


def select_top(
    job: Job, run: Any, pass_index: int, index: int, alive: dict[int, int]
) -> RankVerdict:
    """The exact top-k cut of step ``index`` over every shard's alive rows (``alive``: rows per
    shard); ``run(items)`` maps :func:`rank_round` over shards and yields their histograms."""
    step = job.steps[index]
    total = sum(alive.values())
    starts, at = {}, 0
    for shard in sorted(alive):
        starts[shard], at = at, at + alive[shard]
    verdict = RankVerdict(job.recipe.seed * 1_000_003 + index, total, starts, [])
    eligible = total
    shards = [s for s in sorted(alive) if alive[s]]
    for column, quota in enumerate(step.rank_quotas(total)):
        need = min(quota, eligible)
        if need <= 0:
            verdict.columns.append(None)
            continue
        eligible -= need

        def histogram(stage: str, prefix: int, depth: int, cut: int, col: int = column) -> Any:
            items = [(pass_index, index, s, verdict, col, stage, prefix, depth, cut)
                     for s in shards]  # fmt: skip
            return np.sum(list(run(items)), axis=0)

        key, left = 0, need
        for depth in range(ROUNDS):  # the need-th largest key, 16 bits at a time
            counts = histogram("key", key, depth, 0)[::-1]
            cum = np.cumsum(counts)
            i = int(np.searchsorted(cum, left))
            key, left = key << DIGIT | (BUCKETS - 1 - i), left - int(cum[i] - counts[i])
        last = (1 << 63) - 1
        if left < int(counts[i]):  # some rows at that key are taken: the earliest ones
            last = 0
            for depth in range(ROUNDS):
                counts = histogram("pos", last, depth, key)
                cum = np.cumsum(counts)
                i = int(np.searchsorted(cum, left))
                last, left = last << DIGIT | i, left - int(cum[i] - counts[i])
        verdict.columns.append((key, last))
    return verdict


def apply_chosen(state: ShardState, name: str, index: int, chosen: np.ndarray) -> None:
    """Drop the shard's alive rows a gathered selector did not choose (``chosen``: sorted
    positions)."""
    alive = np.flatnonzero(state.alive)
    at = np.minimum(np.searchsorted(chosen, state.pos[alive]), max(len(chosen) - 1, 0))
    kept = (chosen[at] == state.pos[alive]) if len(chosen) else np.zeros(len(alive), bool)
    state.drop(alive[~kept], index, f"not selected by {name}")
