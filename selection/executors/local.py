"""The local executor: tasks in this process, or in processes forked for one map.

Forked after the driver's reductions, worker processes inherit the fitted steps and the job
without pickling models; results come back in the items' order, with a bounded number of
tasks in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from thresher.selection.job import Job

_FORKED: tuple[Job, Callable[..., Any]] | None = None


def _forked(item: Any) -> Any:
    if _FORKED is None:
        raise RuntimeError("worker started without a job")
    job, task = _FORKED
    return task(job, job.steps, item)


class LocalExecutor:
    """Runs tasks here (``workers == 1``, or ``light`` ones) or in ``workers`` forked
    processes."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def map(
        self,
        job: Job,
        task: Callable[..., Any],
        items: list[Any],
        *,
        desc: str,
        progress: bool,
        total: int | None = None,
        rows: Callable[[Any], int] | None = None,
        light: bool = False,
    ) -> Iterator[Any]:
        bar = tqdm(total=total, unit="rows" if rows else "tasks", desc=desc,
                   disable=not progress, leave=False)  # fmt: skip
        try:
            for result in self._results(job, task, items, light):
                bar.update(rows(result) if rows else 1)
                yield result
        finally:
            bar.close()

    def _results(
        self, job: Job, task: Callable[..., Any], items: list[Any], light: bool
    ) -> Iterator[Any]:
        if self.workers <= 1 or len(items) <= 1 or light:
            for item in items:
                yield task(job, job.steps, item)
            return
        import multiprocessing

        global _FORKED
        _FORKED = (job, task)
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
                pending: list[Future[Any]] = []
                for item in items:
                    pending.append(pool.submit(_forked, item))
                    if len(pending) > 2 * self.workers:
                        yield pending.pop(0).result()
                for future in pending:
                    yield future.result()
        finally:
            _FORKED = None

    def close(self) -> None:
        """Nothing to release: processes live for one map."""
