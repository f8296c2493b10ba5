"""The Ray Data executor: the same passes as the local executor, on a Ray cluster.

Rows live in a Ray Dataset read from the job's shards (one read task per shard, with the same
readers, so positions and ids are identical to a local run). Each pass is a ``map_batches``
over the rows with a callable class that builds the steps once per actor, through the registry,
and refits fitted steps from the summed statistics the driver persisted (arrays, not pickled
steps). Selectors and fits reduce on the driver, exactly as locally, so the same recipe and
seed select the same rows.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import ThresherError, require
from selection.io import ReadBatch, Reject
from selection.plan import BatchOutcome, Op, apply_ops
from selection.registry import combine_stats

if TYPE_CHECKING:
    from selection.engine import Job
    from selection.state import RowState


def init_local_ray(num_cpus: int | None = None) -> None:
    """Start a local Ray whose workers import this checkout of Thresher (not another install)."""
    import os
    from pathlib import Path

    ray = require("ray", "ray")
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )


def _read_shard_rows(item: dict[str, Any], job: Job) -> list[dict[str, Any]]:
    shard = job.shards[int(item["shard"])]
    rows: list[dict[str, Any]] = []
    for batch in job.read(shard):
        # Pickle is only the wire format between Ray tasks here; nothing is stored with it.
        rows.extend(
            {"pos": r.metadata["pos"], "record": pickle.dumps(r), "reject": ""}
            for r in batch.records
        )
        rows.extend(
            {"pos": -1, "record": b"", "reject": json.dumps(x.to_dict())} for x in batch.rejects
        )
    return rows


def _unwrapped(items: Iterator[Any]) -> Iterator[Any]:
    """Re-raise a Thresher error raised inside a Ray task as itself (one line on the CLI)."""
    try:
        yield from items
    except Exception as exc:
        cause: BaseException | None = exc
        for _ in range(8):
            if cause is None:
                break
            # Ray wraps the original in a class deriving from both RayTaskError and it.
            ours = isinstance(cause, ThresherError)
            if ours and not type(cause).__module__.startswith("ray"):
                raise cause from None
            cause = getattr(cause, "cause", None) or cause.__cause__
        raise


def _without_steps(job: Job) -> Job:
    """The job as shipped to Ray: actors build their own steps (models never travel)."""
    import dataclasses

    return dataclasses.replace(job, steps=[])


class PassMapper:
    """One pass's map side, on a Ray actor: steps built once, fitted steps refit from arrays."""

    def __init__(
        self,
        job: Job,
        fitted: dict[int, np.ndarray],
        ops: list[Op],
        state: RowState | None,
        names: list[str],
    ) -> None:
        from selection.engine import build_steps

        self.job = job
        self.steps = build_steps(job.recipe, job.context)
        for step, total in fitted.items():
            self.steps[step].fit_from_stats(total)
        self.ops = ops
        self.state = state
        self.names = names

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from selection.engine import restore

        records = [
            pickle.loads(b) for b, r in zip(batch["record"], batch["reject"], strict=True) if not r
        ]
        rejects = [str(r) for r in batch["reject"] if r] if self.state is None else []
        alive = restore(records, self.state)
        out = apply_ops("ray", alive, self.ops, self.steps)
        n = len(out.pos)
        stats = [b""] * max(n, 1)
        if out.stats:
            stats[0] = pickle.dumps({k: v for k, v in out.stats.items()})
        columns: dict[str, Any] = {
            "pos": np.r_[out.pos, [-1] * (1 - min(n, 1))].astype(np.int64),
            "id": (out.ids or [""]),
            "drop_step": np.r_[out.drop_step, [-1] * (1 - min(n, 1))].astype(np.int16),
            "reason": [r or "" for r in out.reasons] or [""],
            "stats": stats,
            "rejects": [json.dumps(rejects)] + [""] * (max(n, 1) - 1),
        }
        for name in self.names:
            values = out.scores.get(name, np.full(n, np.nan))
            columns[f"score:{name}"] = np.r_[values, [np.nan] * (1 - min(n, 1))]
        return columns


class RayExecutor:
    """Runs passes with Ray Data; starts a local Ray if none is running."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.ray = require("ray", "ray")
        if not self.ray.is_initialized():
            init_local_ray(num_cpus=max(self.workers, 1))
        self._rows: Any = None
        self._fitted: dict[int, np.ndarray] = {}

    def _dataset(self, job: Job, progress: bool) -> Any:
        data = self.ray.data
        context = data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.raise_original_map_exception = True  # a bad row is an InputError, not a UDF crash
        context.enable_progress_bars = progress
        if self._rows is None:
            items = [{"shard": s.index} for s in job.shards]
            self._rows = (
                data.from_items(items, override_num_blocks=max(1, len(items)))
                .flat_map(_read_shard_rows, fn_args=(_without_steps(job),))
                .materialize()
            )
        return self._rows

    def run_pass(
        self, job: Job, index: int, ops: list[Op], state: RowState | None, progress: bool
    ) -> Iterator[BatchOutcome]:
        yield from _unwrapped(self._run_pass(job, index, ops, state, progress))

    def _run_pass(
        self, job: Job, index: int, ops: list[Op], state: RowState | None, progress: bool
    ) -> Iterator[BatchOutcome]:
        for step_index in range(len(job.steps)):
            path = job.work.fit_path(step_index)
            if path.exists() and step_index not in self._fitted:
                self._fitted[step_index] = np.load(path)
        names = [
            n
            for op in ops
            if op.kind == "score"
            for n in (getattr(job.steps[op.step], "score_names", None) or [job.steps[op.step].name])
        ]
        rows = self._dataset(job, progress)
        mapped = rows.map_batches(
            PassMapper,
            fn_constructor_args=(_without_steps(job), dict(self._fitted), ops, state, names),
            batch_size=job.recipe.batch_size,
            batch_format="numpy",
            compute=self.ray.data.ActorPoolStrategy(size=self.workers),
        )
        for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
            keep = batch["pos"] >= 0
            stats: dict[int, np.ndarray] = {}
            for blob in batch["stats"]:
                for step, values in (pickle.loads(blob) if blob else {}).items():
                    stats[step] = combine_stats(job.steps[step], stats.get(step), values)
            rejects = [
                Reject(**json.loads(x))
                for blob in batch["rejects"]
                if blob
                for x in json.loads(blob)
            ]
            yield BatchOutcome(
                key="ray",
                pos=batch["pos"][keep],
                ids=[str(i) for i in batch["id"][keep]],
                drop_step=batch["drop_step"][keep],
                reasons=[str(r) or None for r in batch["reason"][keep]],
                scores={n: batch[f"score:{n}"][keep] for n in names},
                stats=stats,
                rejects=rejects,
            )
        for op in ops:
            if op.kind == "fit":
                self._fitted.pop(op.step, None)  # refreshed from the file after the reduction

    def iter_batches(
        self, job: Job, progress: bool, desc: str, wanted: Callable[[int], bool] | None = None
    ) -> Iterator[ReadBatch]:
        """Every row, in position order (``wanted`` is a local-reading hint; rows are parsed)."""
        yield from _unwrapped(self._iter_batches(job, progress))

    def _iter_batches(self, job: Job, progress: bool) -> Iterator[ReadBatch]:
        rows = self._dataset(job, progress)
        for batch in rows.iter_batches(batch_size=job.recipe.batch_size, batch_format="numpy"):
            records = [pickle.loads(b) for b in batch["record"] if b]
            yield ReadBatch("ray", records)

    def close(self) -> None:
        self._rows = None
