"""The Ray Data executor: the same passes as the local executor, on a Ray cluster.

Rows live in a Ray Dataset read from the job's shards (one read task per shard, with the same
readers, so positions and ids are identical to a local run). The map side of every pass runs on
the same ``workers`` actors, started once per job: each builds the steps once, through the
registry, and before each pass refits the steps fitted since the last one from the summed
statistics the driver persisted (arrays, not pickled steps); the dataset's blocks are handed
to whichever actor is free, and their outcomes come back in the rows' order. Selectors and fits
reduce on the driver, exactly as locally, so the same recipe and seed select the same rows.
(Starting actors per pass, as a ``map_batches`` with an actor pool does, pays process start-up
and step building again on every pass; ``bench/results/selection_throughput.txt`` has the
figures.)
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from thresher.core.errors import ThresherError, require
from thresher.selection.io import ReadBatch, Reject
from thresher.selection.plan import BatchOutcome, Op, apply_ops

if TYPE_CHECKING:
    from thresher.selection.engine import Job
    from thresher.selection.state import RowState


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


class PassWorker:
    """A Ray actor that runs the map side of every pass of one job: its steps are built once,
    when the job starts, and each pass only refits the steps fitted since the last one (from
    the summed statistics as arrays, never pickled steps)."""

    def __init__(self, job: Job) -> None:
        from thresher.selection.engine import build_steps

        self.steps = build_steps(job.recipe, job.context)
        self.batch_size = job.recipe.batch_size
        self.ops: list[Op] = []
        self.state: RowState | None = None

    def prepare(self, fitted: dict[int, np.ndarray], ops: list[Op], state: RowState | None) -> None:
        """Take the fits reduced since the last pass, and this pass's ops and row state."""
        for step, total in fitted.items():
            self.steps[step].fit_from_stats(total)
        self.ops, self.state = ops, state

    def apply(self, block: Any, start: int, end: int) -> list[BatchOutcome]:
        """The pass over rows ``start:end`` of one block of the job's rows, batch by batch."""
        from ray.data.block import BlockAccessor

        from thresher.selection.engine import restore

        rows = BlockAccessor.for_block(block).slice(start, end, copy=False)
        columns = BlockAccessor.for_block(rows).to_batch_format("numpy")
        out = []
        for at in range(0, end - start, self.batch_size):
            chunk = slice(at, at + self.batch_size)
            blobs, bad = columns["record"][chunk], columns["reject"][chunk]
            records = [pickle.loads(b) for b, r in zip(blobs, bad, strict=True) if not r]
            outcome = apply_ops("ray", restore(records, self.state), self.ops, self.steps)
            if self.state is None:  # rows the reader could not parse, reported by pass 1 only
                outcome.rejects = [Reject(**json.loads(str(r))) for r in bad if r]
            out.append(outcome)
        return out


class RayExecutor:
    """Runs passes on a Ray cluster; starts a local Ray if none is running.

    The job's rows are read once into a Ray Dataset; ``workers`` actors (one CPU each) live for
    the whole job, so a pass costs no process start-up, imports or step building."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.ray = require("ray", "ray")
        if not self.ray.is_initialized():
            init_local_ray(num_cpus=max(self.workers, 1))
        self._rows: Any = None
        self._actors: list[Any] = []
        self._shipped: set[int] = set()  # steps whose current fit the actors hold

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

    def _blocks(self, rows: Any) -> list[tuple[Any, int, int]]:
        """Every block of the rows as (ref, start, end), in the dataset's order."""
        out = []
        for bundle in rows.iter_internal_ref_bundles():
            sizes = [m.num_rows for m in bundle.metadata]
            for ref, part, n in zip(bundle.block_refs, bundle.slices, sizes, strict=True):
                start, end = (0, n) if part is None else (part.start_offset, part.end_offset)
                if end > start:
                    out.append((ref, start, end))
        return out

    def run_pass(
        self, job: Job, index: int, ops: list[Op], state: RowState | None, progress: bool
    ) -> Iterator[BatchOutcome]:
        yield from _unwrapped(self._run_pass(job, index, ops, state, progress))

    def _run_pass(
        self, job: Job, index: int, ops: list[Op], state: RowState | None, progress: bool
    ) -> Iterator[BatchOutcome]:
        from ray.util import ActorPool
        from tqdm import tqdm

        rows = self._dataset(job, progress)
        if not self._actors:
            worker = self.ray.remote(num_cpus=1)(PassWorker)
            spec = self.ray.put(_without_steps(job))
            cpus = int(self.ray.cluster_resources().get("CPU", 1))  # more would wait forever
            count = max(1, min(self.workers, cpus))
            self._actors = [worker.remote(spec) for _ in range(count)]
        paths = {i: job.work.fit_path(i) for i in range(len(job.steps)) if i not in self._shipped}
        fresh = {i: np.load(p) for i, p in paths.items() if p.exists()}
        fits, shared = self.ray.put(fresh), self.ray.put(state)  # one copy for every actor
        self.ray.get([a.prepare.remote(fits, ops, shared) for a in self._actors])
        self._shipped.update(fresh)
        pool = ActorPool(self._actors)
        total = int(state.alive.sum()) if state is not None else None
        bar = tqdm(total=total, unit="rows", desc=f"pass {index + 1}", disable=not progress,
                   leave=False)  # fmt: skip
        try:
            results = pool.map(lambda a, b: a.apply.remote(*b), self._blocks(rows))
            for outcomes in results:
                for outcome in outcomes:
                    bar.update(len(outcome.pos))
                    yield outcome
        finally:
            bar.close()
        for op in ops:
            if op.kind == "fit":  # shipped again from the file the reduction writes
                self._shipped.discard(op.step)

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
        for actor in self._actors:
            self.ray.kill(actor)
        self._actors = []
        self._rows = None
