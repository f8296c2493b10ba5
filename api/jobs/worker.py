"""The worker process: takes queued jobs from the store and runs them with the selection engine.

It runs apart from the service so a long selection never blocks a request, and a crash of one
never takes the other down. Progress is the engine's own progress bar, read from the job's log.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import threading
import time
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

from thresher.api.jobs.store import JobRecord, JobStore
from thresher.core.errors import ThresherError

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
LOG_NAME = "progress.log"
OUTPUT_NAME = "output"


def last_progress_line(path: Path, tail: int = 4096) -> str:
    """The last line a progress bar drew (bars redraw with carriage returns)."""
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - tail))
        data = f.read().decode("utf-8", "replace")
    lines = [p.strip() for p in data.replace("\r", "\n").split("\n") if p.strip()]
    return lines[-1][-300:] if lines else ""


def run_job(store: JobStore, job: JobRecord) -> None:
    """Run one job to the end, recording progress, the result or the error."""
    from thresher import selection

    job.output_dir.mkdir(parents=True, exist_ok=True)
    log_path = job.output_dir / LOG_NAME
    done = threading.Event()

    def watch() -> None:
        while not done.wait(POLL_SECONDS):
            store.set_progress(job.id, last_progress_line(log_path))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with log_path.open("a", encoding="utf-8") as sink, redirect_stderr(sink):
            result = selection.run_recipe(job.recipe, job.output_dir / OUTPUT_NAME, progress=True)
    except ThresherError as exc:
        store.fail(job.id, job_relative(str(exc), job.output_dir))
    except Exception as exc:  # noqa: BLE001 - the job fails, the worker lives on
        log.exception("selection job %s failed", job.id)
        store.fail(job.id, job_relative(f"{type(exc).__name__}: {exc}", job.output_dir))
    else:
        # Done: what was kept and why, not the last bar drawn (a finished pass reads "0rows").
        store.set_progress(job.id, result.summary())
        store.succeed(job.id, describe(result, job.output_dir))
    finally:
        done.set()
        watcher.join()


def job_relative(message: str, job_dir: Path) -> str:
    """An error as the client reads it: the job's folder named relative to the job (as its
    files are), never by the server's path."""
    for folder in {str(job_dir.resolve()), str(job_dir)}:
        message = message.replace(folder + "/", "").replace(folder, ".")
    return message


def describe(result: Any, job_dir: Path) -> dict[str, Any]:
    """The engine's result as JSON, with paths relative to the job (no server paths leak), and
    every file the job wrote."""
    root = job_dir.resolve()
    data = dict(result.to_dict())
    for key in ("output_path", "report_dir", "rejects_path", "scores_path", "dropped_path"):
        if data.get(key):
            data[key] = str(Path(data[key]).resolve().relative_to(root))
    data["files"] = sorted(str(p.relative_to(job_dir)) for p in job_dir.rglob("*") if p.is_file())
    return data


def worker_main(db_path: str, idle_exit_seconds: float | None = None) -> None:
    """Loop: claim a queued job, run it; exit after ``idle_exit_seconds`` with nothing to do.

    One worker runs at a time per job database: with several server processes (``serve
    --workers N``) each may start one, and the others wait on the lock until it exits.
    """
    lock = Path(db_path).with_name(Path(db_path).name + ".worker.lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when this process exits
    store = JobStore(db_path)
    idle_since = time.monotonic()
    while True:
        job = store.claim(os.getpid())
        if job is None:
            if idle_exit_seconds is not None and time.monotonic() - idle_since > idle_exit_seconds:
                return
            time.sleep(POLL_SECONDS)
            continue
        run_job(store, job)
        idle_since = time.monotonic()


class JobRunner:
    """Starts the worker process when there is work, and stops it with the service."""

    def __init__(self, store: JobStore, idle_exit_seconds: float = 60.0) -> None:
        self.store = store
        self.idle_exit_seconds = idle_exit_seconds
        self._process: Any = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        with self._lock:
            if self._process is not None and self._process.is_alive():
                return
            # spawn: a fresh interpreter, no copied locks or model threads from the service.
            context = multiprocessing.get_context("spawn")
            self._process = context.Process(
                target=worker_main,
                args=(str(self.store.path), self.idle_exit_seconds),
                name="thresher-selection-worker",
                daemon=True,
            )
            self._process.start()

    def resume(self) -> list[str]:
        """After a restart: queue orphaned jobs again and start a worker if any wait."""
        orphans = self.store.requeue_orphans()
        if self.store.count("queued"):
            self.ensure_running()
        return orphans

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is not None and process.is_alive():
            process.terminate()
            process.join(timeout)
