"""From built steps to passes over the data, and the per-batch work every executor shares.

A step contributes operations in this order: ``fit`` (a :class:`Fitted` step needs a pass over
its input) or ``group`` (a :class:`Grouped` step: rows keyed, shuffled and clustered across the
whole input), ``score`` (a scorer, a map), ``filter`` (a map) and ``select`` (a global
decision). ``fit``, ``group`` and ``select`` are barriers: a pass runs the maps up to the next
barrier, the barrier reduces (statistics on the driver, shuffles and top-k merges as tasks), and
the next pass starts after it. The plan's last pass has no barrier: it runs with the write.
Rows never move between passes; only each shard's per-row state does (alive or dropped by which
step and why, and the scores), on disk beside the job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from thresher.core.record import Record
from thresher.core.steps import Filter, Scorer, Selector
from thresher.selection.io import Reject
from thresher.selection.registry import (
    Fitted,
    Grouped,
    RankSelector,
    ScoreSelector,
    score_names,
)

OpKind = Literal["fit", "group", "score", "filter", "select"]
BARRIERS = ("fit", "group", "select")
ALIVE = -1


@dataclass(frozen=True)
class Op:
    step: int
    kind: OpKind


def step_ops(index: int, step: Any) -> list[Op]:
    """The operations a step contributes, found by the capabilities it declares."""
    ops: list[Op] = []
    if isinstance(step, Grouped):
        return [Op(index, "group"), Op(index, "filter")]
    if isinstance(step, Fitted):
        ops.append(Op(index, "fit"))
    if isinstance(step, Scorer):
        ops.append(Op(index, "score"))
    if isinstance(step, Filter):
        ops.append(Op(index, "filter"))
    if isinstance(step, RankSelector | ScoreSelector | Selector):
        ops.append(Op(index, "select"))
    return ops


def plan_passes(steps: Sequence[Any]) -> list[list[Op]]:
    """Split the operations into passes: each but the last ends at a barrier; the last (maybe
    empty) holds the maps after the last barrier and runs with the write."""
    passes: list[list[Op]] = []
    current: list[Op] = []
    for index, step in enumerate(steps):
        ops = step_ops(index, step)
        if not ops:
            raise TypeError(
                f"steps[{index}] ({type(step).__name__}) implements none of Scorer, Filter, "
                "Selector, ScoreSelector, RankSelector, Fitted or Grouped (see selection.registry)"
            )
        for op in ops:
            current.append(op)
            if op.kind in BARRIERS:
                passes.append(current)
                current = []
    passes.append(current)
    return passes


@dataclass
class BatchOutcome:
    """What one batch of one pass produced, for the rows alive when the pass began."""

    key: str
    pos: np.ndarray
    ids: list[str]
    drop_step: np.ndarray
    reasons: list[str | None]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[int, np.ndarray] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)


def apply_ops(
    key: str,
    records: list[Record],
    ops: Sequence[Op],
    steps: Sequence[Any],
    rejects: list[Reject] | None = None,
    deciders: Mapping[int, Filter] | None = None,
) -> BatchOutcome:
    """Run the map part of a pass over one batch of (alive) records.

    A :class:`thresher.selection.registry.MultiScorer` returns one column per name (shape
    ``(n, m)``).
    ``deciders`` stand in for steps whose filter is a verdict reached at a barrier (a grouped
    step's drops for this shard), looked up by row position.
    """
    n = len(records)
    outcome = BatchOutcome(
        key=key,
        pos=np.array([r.metadata["pos"] for r in records], dtype=np.int64),
        ids=[r.id for r in records],
        drop_step=np.full(n, ALIVE, dtype=np.int16),
        reasons=[None] * n,
        rejects=list(rejects or []),
    )
    alive = np.arange(n)
    for op in ops:
        step = steps[op.step]
        live = [records[i] for i in alive]
        if op.kind == "score":
            names = score_names(step)
            columns = np.full((n, len(names)), np.nan)
            if live:
                values = np.asarray(step.score(live), dtype=np.float64)
                flat_ok = len(names) == 1 and values.shape == (len(live),)
                if not flat_ok and values.shape != (len(live), len(names)):
                    raise ValueError(
                        f"scorer {step.name!r} returned shape {values.shape} for "
                        f"{len(live)} records and scores {names}"
                    )
                values = values.reshape(len(live), len(names))
                columns[alive] = values
                for record, row in zip(live, values, strict=True):
                    record.scores.update(zip(names, map(float, row), strict=True))
            for j, name in enumerate(names):
                outcome.scores[name] = columns[:, j]
        elif op.kind == "filter" and live:
            decider = (deciders or {}).get(op.step, step)
            mask, why = decider.keep(live)
            mask = np.asarray(mask, dtype=bool)
            for j in np.flatnonzero(~mask):
                i = alive[j]
                outcome.drop_step[i] = op.step
                outcome.reasons[i] = why[j] or f"dropped by {step.name}"
            alive = alive[mask]
        elif op.kind == "fit" and live:
            outcome.stats[op.step] = np.asarray(step.fit_stats(live))
        elif op.kind == "group" and live:
            outcome.stats[op.step] = np.asarray(step.group_rows(live))
    return outcome
