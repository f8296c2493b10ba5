"""The SQLite job store: jobs survive a restart, a dead worker's job is queued again, and two
workers never claim the same job."""

from __future__ import annotations

import fcntl
import multiprocessing
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from thresher.api.jobs.store import JobStore
from thresher.api.jobs.worker import last_progress_line, worker_main
from thresher.core.errors import NotFoundError


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_restart_loses_no_job_and_requeues_orphans(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    first = store.create({"inputs": ["a.jsonl"]}, tmp_path / "a")
    second = store.create({"inputs": ["b.jsonl"]}, tmp_path / "b")
    claimed = store.claim(dead_pid())
    assert claimed is not None and claimed.id == first.id and claimed.status == "running"

    reopened = JobStore(tmp_path / "jobs.sqlite")  # the service restarted
    assert {j.id for j in reopened.list()} == {first.id, second.id}
    assert reopened.requeue_orphans() == [first.id]
    again = reopened.get(first.id)
    assert again.status == "queued" and again.attempts == 1
    assert again.recipe == {"inputs": ["a.jsonl"]}


def test_a_live_workers_job_is_left_alone(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.create({}, tmp_path / "x")
    import os

    store.claim(os.getpid())
    assert store.requeue_orphans() == []
    store.succeed(job.id, {"summary": "kept 3 of 5"})
    done = store.get(job.id)
    assert done.status == "succeeded" and done.result == {"summary": "kept 3 of 5"}


def test_concurrent_claims_take_each_job_once(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    ids = {store.create({"n": i}, tmp_path / str(i)).id for i in range(20)}
    with ThreadPoolExecutor(4) as pool:
        claims = list(pool.map(lambda i: store.claim(1000 + i), range(30)))
    taken = [c.id for c in claims if c is not None]
    assert sorted(taken) == sorted(ids)


def test_unknown_job_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match="No selection job"):
        JobStore(tmp_path / "jobs.sqlite").get("nope")


def test_progress_is_the_last_bar_drawn(tmp_path):
    log = tmp_path / "progress.log"
    log.write_text("dsir:  10%|#  | 1/10\rdsir:  90%|#########| 9/10\r")
    assert last_progress_line(log).startswith("dsir:  90%")
    assert last_progress_line(tmp_path / "missing.log") == ""


def test_one_selection_worker_runs_at_a_time(tmp_path):
    # Another server process's worker holds the lock: a second one waits, then runs.
    db = tmp_path / "jobs.sqlite"
    JobStore(db)
    held = (tmp_path / "jobs.sqlite.worker.lock").open("w")
    fcntl.flock(held, fcntl.LOCK_EX)
    second = multiprocessing.get_context("spawn").Process(target=worker_main, args=(str(db), 0.1))
    second.start()
    try:
        second.join(3)
        assert second.is_alive()  # waiting for the lock, not polling the store
        held.close()  # the first worker exits
        second.join(30)
        assert second.exitcode == 0  # it ran, found nothing to do, and exited when idle
    finally:
        if second.is_alive():
            second.terminate()
