"""The local executor: streams shards through the steps, in this process or in a process pool.

Each finished batch is checkpointed atomically, so a killed pass resumes at its first unfinished
batch. Worker processes are forked per pass, after the driver's reductions, so they inherit the
fitted steps and the row state without pickling models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from thresher.selection.io import ReadBatch, Shard
from thresher.selection.plan import BatchOutcome, Op, apply_ops
from thresher.selection.state import load_outcome, save_outcome

if TYPE_CHECKING:
    from thresher.selection.engine import Job
    from thresher.selection.state import RowState

_FORKED: tuple[Job, int, list[Op], RowState | None] | None = None


def process_shard(
    job: Job, shard: Shard, index: int, ops: list[Op], state: RowState | None
) -> list[BatchOutcome]:
    """Run one pass over one shard, reusing the batches a previous run already finished."""
    from thresher.selection.engine import restore

    folder = job.work.batch_dir(index)
    outcomes = []
    for batch in job.read(shard):
        path = folder / f"{batch.key}.npz"
        if path.exists():
            outcomes.append(load_outcome(path))
            continue
        alive = restore(batch.records, state)
        outcome = apply_ops(
            batch.key, alive, ops, job.steps, batch.rejects if state is None else None
        )
        save_outcome(path, outcome)
        outcomes.append(outcome)
    return outcomes


def _forked_shard(shard: Shard) -> list[BatchOutcome]:
    if _FORKED is None:
        raise RuntimeError("worker started without a job")
    job, index, ops, state = _FORKED
    return process_shard(job, shard, index, ops, state)


class LocalExecutor:
    """Streams the job's shards; ``workers > 1`` maps shards in forked processes."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def run_pass(
        self, job: Job, index: int, ops: list[Op], state: RowState | None, progress: bool
    ) -> Iterator[BatchOutcome]:
        total = int(state.alive.sum()) if state is not None else None
        names = ", ".join(f"{op.kind} {job.steps[op.step].name}" for op in ops) or "read"
        bar = tqdm(
            total=total,
            unit="rows",
            desc=f"pass {index + 1}: {names}",
            disable=not progress,
            leave=False,
        )
        try:
            for outcomes in self._shards(job, index, ops, state):
                for outcome in outcomes:
                    bar.update(len(outcome.pos))
                    yield outcome
        finally:
            bar.close()

    def _shards(
        self, job: Job, index: int, ops: list[Op], state: RowState | None
    ) -> Iterator[Iterable[BatchOutcome]]:
        if self.workers <= 1 or len(job.shards) <= 1:
            for shard in job.shards:
                yield process_shard(job, shard, index, ops, state)
            return
        import multiprocessing

        global _FORKED
        _FORKED = (job, index, ops, state)
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
                # Keep a bounded number of shards in flight: memory stays O(workers * shard).
                pending: list[Future[list[BatchOutcome]]] = []
                for shard in job.shards:
                    pending.append(pool.submit(_forked_shard, shard))
                    if len(pending) > 2 * self.workers:
                        yield pending.pop(0).result()
                for future in pending:
                    yield future.result()
        finally:
            _FORKED = None

    def iter_batches(
        self, job: Job, progress: bool, desc: str, wanted: Callable[[int], bool] | None = None
    ) -> Iterator[ReadBatch]:
        bar = tqdm(unit="rows", desc=desc, disable=not progress, leave=False)
        try:
            for shard in job.shards:
                for batch in job.read(shard, wanted):
                    bar.update(len(batch.records))
                    yield batch
        finally:
            bar.close()

    def close(self) -> None:
        """Nothing to release: pools live for one pass."""
