"""Job state in SQLite (embedded, WAL): the service and its worker process share it, and a
restart of either loses no job: a job left ``running`` by a dead worker is queued again and the
selection engine resumes it from its output folder."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from thresher.core.errors import ConfigError, NotFoundError

Status = Literal["queued", "running", "succeeded", "failed"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    recipe TEXT NOT NULL,
    output_dir TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '',
    result TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    owner TEXT
)
"""


@dataclass
class JobRecord:
    """One selection job as stored."""

    id: str
    status: Status
    recipe: dict[str, Any]
    output_dir: Path
    progress: str
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    pid: int | None
    created: float
    updated: float
    owner: str | None = None  # the tenant that submitted it (api/state.py tenant_of)


class JobStore:
    """Jobs in one SQLite file; every call opens a short transaction (safe across processes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(SCHEMA)
                columns = {r["name"] for r in db.execute("PRAGMA table_info(jobs)")}
                if "owner" not in columns:  # a database from before jobs had owners
                    db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
                # Jobs submitted with keys off, before tenants: the anonymous tenant's.
                db.execute("UPDATE jobs SET owner = 'anonymous' WHERE owner IS NULL")
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                f"Setting jobs_db (THRESHER_JOBS_DB): the job database cannot be opened "
                f"({type(exc).__name__}: {exc}); point it at a new file or remove the broken "
                "one.",
                field="jobs_db",
            ) from None

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    def create(
        self,
        recipe: dict[str, Any],
        output_dir: Path,
        job_id: str | None = None,
        owner: str | None = None,
    ) -> JobRecord:
        job_id = job_id or uuid.uuid4().hex
        now = time.time()
        with self._db() as db:
            db.execute(
                "INSERT INTO jobs (id, status, recipe, output_dir, created, updated, owner) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                (job_id, json.dumps(recipe), str(output_dir), now, now, owner),
            )
        return self.get(job_id)

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        """The job; with ``owner``, only that caller's (another's is a 404 like a missing one,
        so a job id says nothing about whether it exists)."""
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or (owner is not None and row["owner"] != owner):
            raise no_such_job(job_id)
        return _job(row)

    def list(self, limit: int = 100, owner: str | None = None) -> list[JobRecord]:
        """The most recent jobs; with ``owner``, only that caller's."""
        where, args = ("WHERE owner = ? ", (owner,)) if owner is not None else ("", ())
        with self._db() as db:
            rows = db.execute(
                f"SELECT * FROM jobs {where}ORDER BY created DESC LIMIT ?", (*args, limit)
            )
            return [_job(r) for r in rows.fetchall()]

    def count(self, status: Status) -> int:
        with self._db() as db:
            return int(
                db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]
            )

    def claim(self, pid: int) -> JobRecord | None:
        """Atomically take the oldest queued job for the worker ``pid``."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1"
            ).fetchone()
            if row is None:
                db.execute("COMMIT")
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', pid = ?, attempts = attempts + 1, "
                "updated = ? WHERE id = ?",
                (pid, time.time(), row["id"]),
            )
            db.execute("COMMIT")
        return self.get(row["id"])

    def set_progress(self, job_id: str, progress: str) -> None:
        self._update(job_id, progress=progress)

    def succeed(self, job_id: str, result: dict[str, Any]) -> None:
        self._update(job_id, status="succeeded", result=json.dumps(result), pid=None)

    def fail(self, job_id: str, error: str) -> None:
        self._update(job_id, status="failed", error=error, pid=None)

    def requeue_orphans(self) -> list[str]:
        """Queue again every ``running`` job whose worker process is gone."""
        with self._db() as db:
            rows = db.execute("SELECT id, pid FROM jobs WHERE status = 'running'").fetchall()
        orphans = [r["id"] for r in rows if not _alive(r["pid"])]
        for job_id in orphans:
            self._update(job_id, status="queued", pid=None, progress="requeued after a restart")
        return orphans

    def _update(self, job_id: str, **values: Any) -> None:
        values["updated"] = time.time()
        columns = ", ".join(f"{k} = ?" for k in values)
        with self._db() as db:
            db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*values.values(), job_id))


def no_such_job(job_id: str) -> NotFoundError:
    """The one answer for a job id this caller cannot see: unknown, malformed or another's."""
    return NotFoundError(
        f"No selection job {job_id!r}; GET /v1/selection/jobs lists them.", field="job_id"
    )


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        status=row["status"],
        recipe=json.loads(row["recipe"]),
        output_dir=Path(row["output_dir"]),
        progress=row["progress"],
        result=json.loads(row["result"]) if row["result"] else None,
        error=row["error"],
        attempts=row["attempts"],
        pid=row["pid"],
        created=row["created"],
        updated=row["updated"],
        owner=row["owner"],
    )
