"""What a worker does for one shard: a pass up to its barrier, or the last pass with the write.

A task loads the shard's row state as the previous pass and its barrier left it, reads only the
rows still needed (jsonl rows nobody needs are not even parsed), runs the pass's operations
batch by batch (each finished batch is checkpointed, so a killed task resumes mid-shard), and
writes the shard's new state, its fit statistics, its grouped steps' rows and keys, and its
unreadable rows, each file atomically; the file of the shard's state is written last, so its
existence says the shard's pass is done. The write task writes the shard's output parts and a
:class:`thresher.selection.summary.ShardSummary`. Tasks return small summaries; every row stays
with the worker that read it.
"""

from __future__ import annotations

import resource
import time
from functools import reduce
from typing import TYPE_CHECKING, Any

import numpy as np

from thresher.core.record import Record
from thresher.selection.io import Reject
from thresher.selection.outputs import ShardSink, rows_to_read
from thresher.selection.plan import BatchOutcome, Op, apply_ops
from thresher.selection.ranking import RankVerdict, apply_chosen, apply_rank
from thresher.selection.registry import (
    Grouped,
    OutputObserver,
    combine_stats,
    concatenates,
    score_names,
)
from thresher.selection.shuffle import ShardVerdicts, write_map_side
from thresher.selection.state import (
    ShardState,
    array_json,
    json_array,
    load_outcome,
    load_shard_extras,
    save_npz,
    save_outcome,
)
from thresher.selection.summary import ScoreSketch, ShardSummary
from thresher.selection.writers import JsonlWriter

if TYPE_CHECKING:
    from collections.abc import Iterator

    from thresher.selection.io import ReadBatch, Shard
    from thresher.selection.job import Job


_EARLIER = 0.0  # this process's peak before its last reset (the driver's, when tasks run in it)


def reset_peak(*, forget: bool = False) -> None:
    """Start measuring this process's peak resident memory afresh (Linux; elsewhere the
    process's lifetime peak is what :func:`peak_mb` reports); the peak so far is remembered
    for :func:`process_peak_mb` unless ``forget``."""
    global _EARLIER
    _EARLIER = 0.0 if forget else max(_EARLIER, peak_mb())
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_mb() -> float:
    """This process's peak resident memory since :func:`reset_peak`, in MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_peak_mb() -> float:
    """This process's peak since its last ``reset_peak(forget=True)``, across task resets."""
    return max(_EARLIER, peak_mb())


def restore(records: list[Record], state: ShardState | None) -> list[Record]:
    """Keep the records still alive and give them back the scores earlier passes computed."""
    if state is None or not records:
        return records
    ri = state.index(np.array([r.metadata["pos"] for r in records], dtype=np.int64))
    alive = []
    for record, i in zip(records, ri, strict=True):
        if state.drop_step[i] < 0:
            for name, column in state.scores.items():
                if not np.isnan(column[i]):
                    record.scores[name] = float(column[i])
            alive.append(record)
    return alive


def load_state(job: Job, steps: list[Any], shard: Shard, pass_index: int, *,
               strings: bool = True, barrier: bool = True) -> ShardState:  # fmt: skip
    """The shard's rows after pass ``pass_index`` and (with ``barrier``) its selection."""
    state = ShardState.load(job.work.shard_path(pass_index, shard.index), strings=strings)
    for op in job.passes[pass_index] if barrier else ():
        if op.kind != "select":
            continue
        ranked = job.work.rank_path(pass_index, op.step)
        if ranked.exists():
            verdict = RankVerdict.load(ranked)
            apply_rank(state, steps[op.step], op.step, verdict, shard.index)
        else:
            chosen = np.load(job.work.chosen_path(pass_index, op.step))
            apply_chosen(state, steps[op.step].name, op.step, chosen)
    return state


def _position_filters(
    job: Job, steps: list[Any], shard: Shard, ops: list[Op], state: ShardState | None
) -> tuple[list[Op], dict[int, ShardVerdicts]]:
    """Grouped steps' verdicts for this shard; those leading the pass are applied to the state
    at once (their rows need not be read)."""
    deciders = {
        op.step: ShardVerdicts.load(job.work, op.step, shard.index)
        for op in ops
        if op.kind == "filter" and isinstance(steps[op.step], Grouped)
    }
    lead = 0
    while state is not None and lead < len(ops) and ops[lead].step in deciders:
        op = ops[lead]
        alive = np.flatnonzero(state.alive)
        mask, why = deciders[op.step].keep_positions(state.pos[alive])
        gone = np.flatnonzero(~mask)
        state.drop(alive[gone], op.step, [why[j] or "" for j in gone.tolist()])
        lead += 1
    return ops[lead:], deciders


def _scan(job: Job, steps: list[Any], shard: Shard, pass_index: int, ops: list[Op],
          state: ShardState | None, deciders: dict[int, ShardVerdicts], wanted: set[int] | None,
          checkpoint: bool) -> Iterator[tuple[ReadBatch, BatchOutcome]]:  # fmt: skip
    for batch in job.read(shard, None if wanted is None else wanted.__contains__):
        path = job.work.batch_path(pass_index, batch.key) if checkpoint else None
        if path is not None and path.exists():
            yield batch, load_outcome(path)
            continue
        alive = restore(batch.records, state)
        rejects = batch.rejects if state is None else None
        outcome = apply_ops(batch.key, alive, ops, steps, rejects, deciders)
        if path is not None:
            save_outcome(path, outcome)
        yield batch, outcome


def _write_rejects(job: Job, shard: int, rejects: list[Reject]) -> None:
    if rejects:
        path = job.layout.part("rejects", shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = JsonlWriter(path)
        writer.write([r.to_dict() for r in rejects])
        writer.commit()


def _rejects_so_far(job: Job, shard: int, pass_index: int) -> int:
    """The shard's unreadable rows, counted by the first pass and carried by each since."""
    if not pass_index:
        return 0
    return int(load_shard_extras(job.work.shard_path(pass_index - 1, shard))[1]["rejects"])


def run_pass(job: Job, steps: list[Any], item: tuple[int, int]) -> dict[str, Any]:
    """Pass ``item[0]`` over shard ``item[1]`` up to the pass's barrier."""
    pass_index, index = item
    shard, path = job.shards[index], job.work.shard_path(pass_index, index)
    if path.exists():
        return dict(load_shard_extras(path)[1])
    began = time.perf_counter()
    reset_peak()
    state = load_state(job, steps, shard, pass_index - 1) if pass_index else None
    alive_in = None if state is None else int(state.alive.sum())
    ops, deciders = _position_filters(job, steps, shard, job.passes[pass_index], state)
    wanted = None if state is None else set(state.pos[state.alive].tolist())
    before = _rejects_so_far(job, index, pass_index)
    parts: dict[int, list[np.ndarray]] = {}
    outcomes: list[BatchOutcome] = []
    for _, outcome in _scan(job, steps, shard, pass_index, ops, state, deciders, wanted, True):
        for step, stats in outcome.stats.items():
            parts.setdefault(step, []).append(stats)
        outcome.stats = {}
        outcomes.append(outcome)
    rejects = [r for o in outcomes for r in o.rejects]
    if state is None:
        state = ShardState.from_outcomes(outcomes)
    else:
        state.merge(outcomes)
    del outcomes
    stats: dict[int, np.ndarray] = {}
    for step, pieces in parts.items():
        if isinstance(steps[step], Grouped):
            write_map_side(job.work, step, steps[step], index, np.concatenate(pieces))
        elif concatenates(steps[step]):
            stats[step] = np.concatenate(pieces)
        else:
            stats[step] = reduce(lambda a, b, s=steps[step]: combine_stats(s, a, b), pieces)
    _write_rejects(job, index, rejects)
    summary = {
        "rows": len(state.pos), "alive_in": alive_in, "alive": int(state.alive.sum()),
        "rejects": before + len(rejects),
        "first_reject": rejects[0].to_dict() if rejects else None,
        "seconds": time.perf_counter() - began, "peak_mb": peak_mb(),
    }  # fmt: skip
    state.save(path, stats, summary)
    for done in path.parent.glob(f"{index:05d}-*.npz"):
        done.unlink(missing_ok=True)
    return summary


def write_shard(job: Job, steps: list[Any], item: tuple[int, int]) -> dict[str, Any]:
    """The last pass over shard ``item[1]`` (``item[0]``: its index), writing its parts."""
    pass_index, index = item
    shard, marker = job.shards[index], job.work.final_path(index)
    if marker.exists():
        with np.load(marker, allow_pickle=False) as data:
            return dict(array_json(data["summary"]))
    began = time.perf_counter()
    reset_peak()
    state = load_state(job, steps, shard, pass_index - 1) if pass_index else None
    ops, deciders = _position_filters(job, steps, shard, job.passes[pass_index], state)
    summary = ShardSummary()
    names = [n for s in steps for n in score_names(s)]
    sink = ShardSink(job.layout, index, [s.name for s in steps], names, job.schema, summary)
    observers = [s for s in steps if isinstance(s, OutputObserver)]
    wanted = rows_to_read(state, job.recipe.output.write_dropped)
    outcomes: list[BatchOutcome] = []
    try:
        for batch, outcome in _scan(job, steps, shard, pass_index, ops, state, deciders,
                                    wanted, False):  # fmt: skip
            if state is None:  # the job's first pass: this batch is all there is of it yet
                outcomes.append(outcome)
                kept = sink.add(batch.records, ShardState.from_outcomes([outcome]))
            else:
                state.merge([outcome])
                kept = sink.add(batch.records, state)
            for observer in observers:
                if kept:
                    summary.observe(observer.name, np.asarray(observer.output_stats(kept)))
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    if state is None:
        rejects = [r for o in outcomes for r in o.rejects]
        state = ShardState.from_outcomes(outcomes)
        _write_rejects(job, index, rejects)
        summary.rejects = len(rejects)
    else:
        summary.rejects = _rejects_so_far(job, index, pass_index)
    summary.count_rows(state.pos, state.drop_step, state.reasons)
    for name, values in state.scores.items():
        summary.sketches.setdefault(name, ScoreSketch()).add(values, state.alive)
    summary.seconds, summary.peak_mb = time.perf_counter() - began, peak_mb()
    data = summary.to_json()
    save_npz(marker, {"summary": json_array(data)})
    return data
