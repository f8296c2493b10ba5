"""Selection jobs: submit a recipe (with an input path or an upload), follow it, download results.

Jobs run in a worker process; their state lives in SQLite, so a restart of the service loses
none. Every file a recipe names must lie under the roots in ``THRESHER_JOBS_INPUT_ROOTS`` (reads)
or in the job's own folder (the output): a request cannot make the service read or write an
arbitrary file (api/jobs/paths.py). Relative paths resolve under the first root.

A job, its upload and its outputs belong to the tenant that submitted it: another tenant's job
id answers exactly as an unknown one (404), and its folder is not readable by any other job,
whatever the input roots (Thresher's own folders are never input).
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from thresher.api.boundary import load_json_text
from thresher.api.errors import error_responses
from thresher.api.jobs.paths import RecipeGuard, upload_name
from thresher.api.jobs.store import JobRecord, no_such_job
from thresher.api.state import AppState, State, Tenant
from thresher.core.errors import ConfigError, InputError, NotFoundError

router = APIRouter(tags=["selection"])
ERRORS = error_responses(404)  # no such job, file or input path
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
UPLOAD_CHUNK = 1 << 20


class SelectionJobRequest(BaseModel):
    """A recipe (the selection engine's YAML/JSON as an object) and where its input is."""

    recipe: dict[str, Any] = Field(description="The selection recipe (inputs, steps, output).")
    input_path: str | None = Field(
        None, description="Replaces the recipe's input paths (must be under an allowed root)."
    )


class SelectionJobResponse(BaseModel):
    id: str
    status: str
    progress: str
    attempts: int
    created: float
    updated: float
    error: str | None = None
    result: dict[str, Any] | None = None
    files: list[str] = Field(default_factory=list, description="Download URLs of the results.")


class SelectionJobList(BaseModel):
    data: list[SelectionJobResponse]


@router.post(
    "/v1/selection/jobs", response_model=SelectionJobResponse, status_code=202, responses=ERRORS
)
def submit_job(request: SelectionJobRequest, state: State, tenant: Tenant) -> SelectionJobResponse:
    """Queue a recipe; the answer has the job id to poll (only this tenant sees the job)."""
    recipe = dict(request.recipe)
    if request.input_path is not None:
        recipe["inputs"] = _override_inputs(recipe.get("inputs"), request.input_path)
    field = "input_path" if request.input_path is not None else None
    return _submit(state, recipe, uuid.uuid4().hex, field, tenant)


@router.post(
    "/v1/selection/jobs/upload",
    response_model=SelectionJobResponse,
    status_code=202,
    responses=ERRORS,
)
def submit_upload(
    state: State,
    tenant: Tenant,
    file: Annotated[UploadFile, File(description="The input data (jsonl, jsonl.gz, parquet).")],
    recipe: Annotated[str, Form(description="The recipe as JSON text.")],
) -> SelectionJobResponse:
    """Queue a recipe over an uploaded file (the file replaces the recipe's inputs). The file
    keeps a safe, short form of its name; a rejected job leaves nothing on disk."""
    # JSON text outside the body: the boundary did not see it, so the same checks run here.
    parsed = load_json_text(recipe, "recipe", getattr(state.settings, "max_json_depth", 64))
    if not isinstance(parsed, dict):
        raise InputError("recipe must be a JSON object.", field="recipe")
    job_id = uuid.uuid4().hex
    name = upload_name(file.filename)
    folder = _jobs_dir(state) / job_id
    target = folder / "input" / name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(name + ".part")
        with tmp.open("wb") as out:
            while chunk := file.file.read(UPLOAD_CHUNK):
                out.write(chunk)
        tmp.replace(target)
        parsed["inputs"] = _override_inputs(parsed.get("inputs"), str(target))
        return _submit(state, parsed, job_id, "file", tenant)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # no job: its upload goes too
        raise


@router.get("/v1/selection/jobs", response_model=SelectionJobList)
def list_jobs(state: State, tenant: Tenant) -> SelectionJobList:
    """This tenant's jobs, the most recent first."""
    return SelectionJobList(data=[_response(j) for j in _store(state).list(owner=tenant)])


@router.get("/v1/selection/jobs/{job_id}", response_model=SelectionJobResponse, responses=ERRORS)
def get_job(job_id: str, state: State, tenant: Tenant) -> SelectionJobResponse:
    """Status, progress (the engine's progress bar; when done, what was kept and why), and the
    result."""
    return _response(_store(state).get(_check_id(job_id), owner=tenant))


@router.get(
    "/v1/selection/jobs/{job_id}/files/{name:path}",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **ERRORS},
)
def download(job_id: str, name: str, state: State, tenant: Tenant) -> FileResponse:
    """One file the job wrote (the kept rows, rejects, scores, report)."""
    job = _store(state).get(_check_id(job_id), owner=tenant)
    root = job.output_dir.resolve()
    path = root if "\x00" in name else (root / name).resolve()  # NUL: no such file
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFoundError(f"Job {job_id} has no file {name!r}; see its 'files'.", field="name")
    return FileResponse(path, filename=path.name)


def _submit(
    state: AppState,
    recipe: dict[str, Any],
    job_id: str,
    inputs_field: str | None,
    owner: str,
) -> SelectionJobResponse:
    from thresher import selection

    guard = _guard(state)
    if not recipe.get("base_dir"):
        recipe = {**recipe, "base_dir": str(guard.read_roots[0])}
    checked = selection.load_recipe(recipe).to_dict()  # ConfigError names the bad key: a 422
    output_dir = _jobs_dir(state) / job_id
    guard.check(checked, output_dir, inputs_field)
    job = _store(state).create(checked, output_dir, job_id, owner=owner)
    if state.job_runner is not None:
        state.job_runner.ensure_running()
    return _response(job)


def _override_inputs(inputs: Any, path: str) -> list[Any]:
    first = inputs[0] if isinstance(inputs, list) and inputs else {}
    spec = dict(first) if isinstance(first, dict) else {}
    spec["path"] = path
    return [spec]


def _guard(state: AppState) -> RecipeGuard:
    settings: Any = state.settings
    roots = settings.jobs_input_roots or [settings.data_dir]
    backends = {"local", settings.backend, *(spec.url for spec in settings.routes.values())}
    # Thresher's own files: other jobs, pools (every tenant's), the job and cache databases.
    db = settings.jobs_db_path()
    private = [
        settings.jobs_dir_path(), settings.data_dir / "pools", settings.tenants_dir(),
        db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
    ]  # fmt: skip
    if settings.compress_cache_path is not None:
        private.append(settings.compress_cache_path)
    return RecipeGuard(
        tuple(Path(r).resolve() for r in roots),
        frozenset(backends),
        tuple(Path(p).resolve() for p in private),
    )


def _jobs_dir(state: AppState) -> Path:
    return state.settings.jobs_dir_path()  # type: ignore[attr-defined, no-any-return]


def _store(state: AppState) -> Any:
    if state.jobs is None:
        raise ConfigError("Selection jobs are off in this deployment.", field="jobs_db")
    return state.jobs


def _check_id(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise no_such_job(job_id)
    return job_id


def _response(job: JobRecord) -> SelectionJobResponse:
    files = (job.result or {}).get("files", [])
    return SelectionJobResponse(
        id=job.id,
        status=job.status,
        progress=job.progress,
        attempts=job.attempts,
        created=job.created,
        updated=job.updated,
        error=job.error,
        result=job.result,
        files=[f"/v1/selection/jobs/{job.id}/files/{f}" for f in files],
    )
