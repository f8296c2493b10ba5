"""The Ray executor: a job's tasks as Ray tasks, on a cluster or on a Ray started for the job.

Connecting: an ``address`` (``host:port`` of a running cluster's head, or ``ray://host:10001``
for Ray Client), else ``RAY_ADDRESS``, else a Ray started on this machine with ``workers``
CPUs. The driver ships this installed Thresher's own code (``thresher.core`` and
``thresher.selection``) to the cluster as a runtime environment's ``py_modules``, so every
worker runs exactly the driver's code; the nodes need Thresher's dependencies (an image or
environment with ``thresher[selection,ray]`` installed). Inputs and the job's folder must be on a
filesystem every node sees at the same path (NFS, a shared volume): tasks read their shards and
write their parts and state there.

Tasks hold no state between calls except a per-process cache of the job's built steps (keyed by
the job's run token), refitted from the fit files the driver wrote when they change; so a task
can run on any node, and Ray re-runs the tasks of a node that dies (their files are atomic and
a finished shard is skipped). At most twice ``workers`` tasks are in flight; results are taken
in the items' order, so statistics merge in the same order on every executor.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thresher.core.errors import ConfigError, ThresherError, require

if TYPE_CHECKING:
    from thresher.selection.job import Job

_CACHE: dict[str, Any] = {}  # in a worker process: the current job's steps and their fits


def stage_code(folder: Path) -> Path:
    """A copy of the installed ``thresher`` package's ``core`` and ``selection`` (what tasks
    import) under ``folder/thresher``, for a runtime environment's ``py_modules``."""
    import thresher
    import thresher.core
    import thresher.selection

    root = folder / "thresher"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(thresher.__file__), root / "__init__.py")
    for package in (thresher.core, thresher.selection):
        source = Path(next(iter(package.__path__)))
        shutil.copytree(source, root / package.__name__.rsplit(".", 1)[1], dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    return root


def _steps(job: Job, versions: dict[int, int]) -> list[Any]:
    """This process's steps for ``job``, built once per run and refitted when a fit changed."""
    from thresher.selection.job import build_steps

    if _CACHE.get("token") != job.token:
        _CACHE.clear()
        _CACHE.update(token=job.token, steps=build_steps(job.recipe, job.context), fits={})
    steps, fits = _CACHE["steps"], _CACHE["fits"]
    for step, version in versions.items():
        if fits.get(step) != version:
            steps[step].fit_from_stats(np.load(job.work.fit_path(step)))
            fits[step] = version
    return steps


def run_task(job: Job, versions: dict[int, int], task: Callable[..., Any], item: Any) -> Any:
    """One task of a job, in a Ray worker process."""
    return task(job, _steps(job, versions), item)


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


def _check_reachable(address: str) -> None:
    """Fail at once, naming the address, when a cluster's head does not answer (Ray itself
    retries for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"No Ray cluster answers at {address!r} ({exc.strerror or exc}); start one "
            "(ray start --head) or give its head's host:port with --address or RAY_ADDRESS.",
            field="address",
        ) from None


class RayExecutor:
    """Runs a job's tasks on Ray (see the module docstring)."""

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self.ray = ray = require("ray", "ray")
        self._staged: Path | None = None
        self._owned = not ray.is_initialized()
        if self._owned:
            self._staged = Path(tempfile.mkdtemp(prefix="thresher-code-"))
            env = {"py_modules": [str(stage_code(self._staged))]}
            address = address or os.environ.get("RAY_ADDRESS") or None
            if address:
                _check_reachable(address)
                ray.init(address=address, runtime_env=env, log_to_driver=False)
            else:
                ray.init(num_cpus=max(workers or 1, 1), include_dashboard=False,
                         log_to_driver=False, runtime_env=env)  # fmt: skip
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.workers = min(workers or cpus, cpus)  # more would wait for CPUs anyway
        self._task = ray.remote(num_cpus=1, max_retries=3)(run_task)
        self._job: tuple[str, Any] | None = None

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
        yield from _unwrapped(self._map(job, task, items, desc, progress, total, rows))

    def _map(self, job: Job, task: Callable[..., Any], items: list[Any], desc: str,
             progress: bool, total: int | None,
             rows: Callable[[Any], int] | None) -> Iterator[Any]:  # fmt: skip
        from tqdm.auto import tqdm

        if self._job is None or self._job[0] != job.token:
            self._job = (job.token, self.ray.put(job.without_steps()))
        shipped = self._job[1]
        fits = (job.work.fit_path(i) for i in range(len(job.steps)))
        versions = {i: p.stat().st_mtime_ns for i, p in enumerate(fits) if p.exists()}
        bar = tqdm(total=total, unit="rows" if rows else "tasks", desc=desc,
                   disable=not progress, leave=False)  # fmt: skip
        pending: deque[Any] = deque()
        try:
            for item in items:
                pending.append(self._task.remote(shipped, versions, task, item))
                if len(pending) >= 2 * self.workers:
                    result = self.ray.get(pending.popleft())
                    bar.update(rows(result) if rows else 1)
                    yield result
            while pending:
                result = self.ray.get(pending.popleft())
                bar.update(rows(result) if rows else 1)
                yield result
        finally:
            for ref in pending:  # an error or a closed generator: stop what is still queued
                self.ray.cancel(ref)
            bar.close()

    def close(self) -> None:
        """Disconnect from (or stop) the Ray this executor started; a Ray the caller started
        stays as it was."""
        if self._owned:
            self.ray.shutdown()
        if self._staged is not None:
            shutil.rmtree(self._staged, ignore_errors=True)
