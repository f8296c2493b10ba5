"""Run a recipe: plan passes, map them over shards, reduce each barrier, write, report.

The driver plans and merges statistics; it never holds a row. Each pass is a map of
:func:`thresher.selection.tasks.run_pass` over the shards (the executor decides where: this
process, forked processes, or Ray tasks on a cluster), whose tasks keep each shard's row state
on disk beside the job and hand back summaries. At a pass's barrier the driver merges the
shards' fit statistics and fits, runs grouped steps' shuffles as tasks
(:mod:`thresher.selection.shuffle`) and top-k selections as rounds of histograms
(:mod:`thresher.selection.ranking`). The last pass runs with the write: each shard's task
writes its own output parts (:func:`thresher.selection.tasks.write_shard`), and the driver
joins them (or lists them in a manifest) and builds the report from merged summaries. Every
task's files are atomic, so a job killed anywhere (driver or worker) resumes where it was.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from thresher.core.errors import ConfigError, InputError
from thresher.core.files import atomic_write_text
from thresher.core.steps import Selector
from thresher.selection.io import file_format, plan_shards
from thresher.selection.job import Job, build_steps
from thresher.selection.outputs import EXAMPLE_CAPS, PartLayout
from thresher.selection.plan import plan_passes
from thresher.selection.ranking import rank_round, select_top
from thresher.selection.recipe import Recipe, load_recipe
from thresher.selection.registry import (
    FitNotes,
    OutputObserver,
    RankSelector,
    RowRequester,
    ScoreReader,
    ScoreSelector,
    StepContext,
    combine_stats,
    concatenates,
    score_names,
)
from thresher.selection.report import JobReport, Phase, build_report
from thresher.selection.shuffle import (
    clean,
    cluster,
    is_done,
    partitions,
    plan_partitions,
    reduce_partition,
)
from thresher.selection.state import WorkDir, load_shard_extras, save_array
from thresher.selection.summary import ShardSummary
from thresher.selection.tasks import (
    load_state,
    peak_mb,
    process_peak_mb,
    reset_peak,
    restore,
    run_pass,
    write_shard,
)
from thresher.selection.writers import input_schema

ExecutorName = Literal["local", "ray"]
Task = Callable[[Job, list[Any], Any], Any]


class Executor(Protocol):
    """Maps tasks over items and yields their results in the items' order; ``workers`` is how
    many run at once."""

    workers: int

    def map(self, job: Job, task: Task, items: list[Any], *, desc: str, progress: bool,
            total: int | None = None, rows: Callable[[Any], int] | None = None,
            light: bool = False) -> Iterator[Any]: ...  # fmt: skip

    def close(self) -> None: ...


@dataclass
class JobResult:
    """What a job produced: the report and where its files are."""

    output_path: Path
    report: JobReport
    report_dir: Path
    rejects_path: Path | None
    scores_path: Path | None
    dropped_path: Path | None
    manifest_path: Path
    resumed: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (paths as strings), e.g. for the API's job status."""
        paths = ("output_path", "report_dir", "rejects_path", "scores_path", "dropped_path")
        data: dict[str, Any] = {k: str(v) if (v := getattr(self, k)) else None for k in paths}
        data.update(resumed=self.resumed, seconds=self.seconds, summary=self.summary(),
                    report=self.report.to_dict())  # fmt: skip
        return data

    def summary(self) -> str:
        return self.report.summary_line()

    def _repr_html_(self) -> str:
        return self.report._repr_html_()


def _executor(name: ExecutorName, recipe: Recipe, address: str | None) -> Executor:
    from thresher.selection.executors import EXECUTORS

    try:
        factory = EXECUTORS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown executor {name!r}; use one of {sorted(EXECUTORS)}.", field="executor"
        ) from None
    if address and name != "ray":
        raise ConfigError(
            f"address {address!r} names a Ray cluster; use it with executor 'ray'.",
            field="address",
        )
    workers = recipe.workers if "workers" in recipe.model_fields_set else None
    return factory(workers=workers, address=address)


def run_recipe(
    recipe: str | Path | dict[str, Any] | Recipe,
    output_dir: str | Path,
    *,
    executor: ExecutorName = "local",
    address: str | None = None,
    progress: bool = True,
    fresh: bool = False,
    strict: bool | None = None,
    context: StepContext | None = None,
    keep_work: bool = False,
) -> JobResult:
    """Run a selection recipe and write kept rows, rejects, scores, a manifest and a report.

    Args:
        recipe: a YAML/JSON path, a dict, or a validated :class:`Recipe`.
        output_dir: the job's folder; running again with the same recipe resumes the job.
        executor: ``local`` (this process, or forked processes) or ``ray`` (Ray tasks).
        address: the Ray cluster to run on (``host:port`` or ``ray://host:10001``); default:
            ``RAY_ADDRESS``, else a Ray started for this job on this machine.
        progress: show progress bars.
        fresh: discard a previous run's work in ``output_dir`` instead of resuming it.
        strict: make unreadable rows fatal (overrides the recipe's ``strict``).
        context: models and settings for the steps (built lazily by default).
        keep_work: keep ``output_dir/.work`` (row states, fit statistics, shuffles) after the
            job succeeds; by default it is removed then (a killed job keeps it, to resume).

    Returns:
        The :class:`JobResult` with the report and output paths.
    """
    start = time.perf_counter()
    reset_peak(forget=True)
    recipe = load_recipe(recipe)
    if strict is not None:
        recipe = recipe.model_copy(update={"strict": strict})
    out = Path(output_dir)
    paths = [recipe.resolve(s.path) for s in recipe.inputs]
    formats = [
        file_format(p, s.format) if p.exists() else s.format
        for p, s in zip(paths, recipe.inputs, strict=True)
    ]
    shards = plan_shards(paths, formats, recipe.shard_bytes)
    if context is None:
        context = StepContext(seed=recipe.seed, base_dir=Path(recipe.base_dir or "."),
                              strict=recipe.strict)  # fmt: skip
    steps = build_steps(recipe, context, check=True)  # bad steps fail before any work
    _check_score_names(recipe, steps)
    work = WorkDir(out / ".work")
    layout = PartLayout.of(recipe.output, out, work.root / "parts")
    fingerprint = _fingerprint(recipe, paths)
    resumed = work.open(fingerprint, fresh=fresh)
    if not resumed:
        layout.clear()
    schema = input_schema(paths[0], formats[0]) if len(set(formats)) == 1 else None
    job = Job(recipe, shards, list(recipe.inputs), context, work, plan_passes(steps), layout,
              uuid.uuid4().hex, schema, steps)  # fmt: skip
    runner = _executor(executor, recipe, address)
    phases: list[Phase] = []
    try:
        worker_peak = _run_passes(job, runner, progress, phases, keep_work)
        result = _write(job, runner, progress, phases, fingerprint)
    finally:
        runner.close()
    report = result.report
    report.phases, report.notes = phases, job.notes
    report.worker_peak_mb = max(report.worker_peak_mb, worker_peak)
    report.driver_peak_mb = process_peak_mb()
    result.resumed = resumed
    result.seconds = report.seconds = time.perf_counter() - start
    report.save(result.report_dir)
    if not keep_work:
        import shutil

        shutil.rmtree(work.root, ignore_errors=True)
    return result


def _check_score_names(recipe: Recipe, steps: list[Any]) -> None:
    """A step that reads a score must come after a step that writes it (else: recipe error)."""
    known: list[str] = []
    for i, (spec, step) in enumerate(zip(recipe.steps, steps, strict=True)):
        wanted = step.reads_score() if isinstance(step, ScoreReader) else None
        if wanted is not None and wanted not in known:
            raise ConfigError(
                f"steps[{i}] ({spec.name}) reads the score {wanted!r}, which no earlier step "
                f"writes; earlier steps write {known or 'no scores'}.",
                field=f"steps[{i}].score",
            )
        known.extend(score_names(step))


def _fingerprint(recipe: Recipe, paths: list[Path]) -> str:
    import hashlib

    def stamp_of(path: Path) -> tuple[str, int, int]:
        if not path.is_file():  # a `datasets` folder: its files' sizes and times
            files = sorted(f for f in path.rglob("*") if f.is_file())
            return (
                str(path),
                sum(f.stat().st_size for f in files),
                max((f.stat().st_mtime_ns for f in files), default=0),
            )
        return (str(path), path.stat().st_size, path.stat().st_mtime_ns)

    stamp = json.dumps([stamp_of(p) for p in paths])
    return f"{recipe.fingerprint()}-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}"


def _label(job: Job, ops: list[Any]) -> str:
    return ", ".join(f"{op.kind} {job.steps[op.step].name}" for op in ops) or "read"


def _run_passes(job: Job, runner: Executor, progress: bool, phases: list[Phase],
                keep_work: bool) -> float:  # fmt: skip
    """Every pass but the last, with its barrier; returns the workers' largest peak (MB).
    Unless ``keep_work``, what a finished pass made obsolete is removed as it finishes (the
    previous pass's row states, its shuffles' rows, keys and edges)."""
    alive: int | None = None
    worker_peak = 0.0
    for index, ops in enumerate(job.passes[:-1]):
        label = _label(job, ops)
        done = job.work.done_path(index)
        if done.exists():  # refit from the persisted totals; verdicts are on disk
            for op in ops:
                if op.kind == "fit":
                    job.steps[op.step].fit_from_stats(np.load(job.work.fit_path(op.step)))
            alive = json.loads(done.read_text())["alive"]
            continue
        for op in ops:
            if op.kind == "group":
                plan_partitions(job.work, op.step, len(job.shards), runner.workers)
        began = time.perf_counter()
        totals: dict[int, Any] = {}
        per_shard: dict[int, int] = {}
        rows = rejects = 0
        seconds, first_reject = 0.0, None
        items = [(index, s.index) for s in job.shards]
        for (_, shard), summary in zip(items, runner.map(
                job, run_pass, items, desc=f"pass {index + 1}: {label}", progress=progress,
                total=alive, rows=lambda s: s["alive_in"] or s["rows"]), strict=True):  # fmt: skip
            stats, _ = load_shard_extras(job.work.shard_path(index, shard))
            for step, part in stats.items():  # in shard order: the same sums on every executor
                if concatenates(job.steps[step]):
                    totals.setdefault(step, []).append(part)
                else:
                    totals[step] = combine_stats(job.steps[step], totals.get(step), part)
            per_shard[shard] = summary["alive"]
            rows, rejects = rows + summary["rows"], rejects + summary["rejects"]
            first_reject = first_reject or summary["first_reject"]
            seconds += summary["seconds"]
            worker_peak = max(worker_peak, summary["peak_mb"])
        alive = sum(per_shard.values())
        phases.append(Phase(f"pass {index + 1}: {label}", alive, time.perf_counter() - began,
                            "map", seconds))  # fmt: skip
        if index == 0 and not rows:
            _no_rows(job, rejects, first_reject)
        began, nested = time.perf_counter(), len(phases)
        for op in ops:
            step = job.steps[op.step]
            if op.kind == "fit":
                total = totals.get(op.step)
                if isinstance(total, list):
                    total = np.concatenate(total)
                total = step.fit_stats([]) if total is None else total
                save_array(job.work.fit_path(op.step), total)
                step.fit_from_stats(total)
            elif op.kind == "group":
                worker_peak = max(worker_peak, _shuffle(job, runner, op.step, progress, phases))
            elif op.kind == "select":
                alive = _select(job, runner, index, op.step, per_shard, progress)
        del totals
        atomic_write_text(done, json.dumps({"alive": alive}))
        if not keep_work:
            _clean(job, index)
        inner = sum(p.seconds for p in phases[nested:])  # the shuffles' own phases
        phases.append(Phase(f"pass {index + 1} barrier: {label}", alive or 0,
                            time.perf_counter() - began - inner, "serial"))  # fmt: skip
    for step in job.steps:  # what a fitted step could not judge, said once, after every fit
        if isinstance(step, FitNotes):
            job.notes.extend(step.fit_notes())
    return worker_peak


def _clean(job: Job, index: int) -> None:
    for op in job.passes[index]:
        if op.kind == "group":
            clean(job.work, op.step)
    if index:
        for path in job.work.pass_dir(index - 1).glob("shard-*.npz"):
            path.unlink(missing_ok=True)


def _shuffle(job: Job, runner: Executor, index: int, progress: bool, phases: list[Phase]) -> float:
    """A grouped step's reduce tasks, then its one cluster task; returns their largest peak."""
    name = job.steps[index].name
    if not is_done(job.work, index):
        began = time.perf_counter()
        items = [(index, p) for p in range(partitions(job.work, index))]
        edges = sum(r["edges"] for r in runner.map(job, reduce_partition, items,
                                                   progress=progress, desc=f"shuffle {name}"))
        phases.append(Phase(f"shuffle {name}: {len(items)} partitions, {edges} edges", 0,
                            time.perf_counter() - began, "map"))  # fmt: skip
    began = time.perf_counter()
    found = list(runner.map(job, _cluster_task, [index], progress=False, desc="cluster"))[0]
    phases.append(Phase(f"cluster {name}: {found['dropped']} duplicates in {found['clusters']} "
                        "clusters", 0, time.perf_counter() - began, "serial"))  # fmt: skip
    return float(found.get("peak_mb", 0.0))


def _cluster_task(job: Job, steps: list[Any], index: int) -> dict[str, Any]:
    reset_peak()
    return {**cluster(job, steps, index), "peak_mb": peak_mb()}


def _select(job: Job, runner: Executor, pass_index: int, index: int, alive: dict[int, int],
            progress: bool) -> int:  # fmt: skip
    """Reach a selection's verdict and persist it; returns the rows it keeps."""
    step = job.steps[index]
    total = sum(alive.values())
    wanted = step.requested_rows() if isinstance(step, RowRequester) else None
    if wanted is not None and wanted > total:
        job.notes.append(
            f"{step.name} asked for {wanted} rows but only {total} were left, so it kept all"
        )
    if isinstance(step, RankSelector):
        def run(items: list[Any]) -> Iterator[Any]:
            return runner.map(job, rank_round, items, desc="select", progress=False, light=True)

        verdict = select_top(job, run, pass_index, index, alive)
        verdict.save(job.work.rank_path(pass_index, index))
        return sum(q for q in step.rank_quotas(total))
    chosen = _gather_select(job, pass_index, index, progress)
    save_array(job.work.chosen_path(pass_index, index), chosen)
    return len(chosen)


def _gather_select(job: Job, pass_index: int, index: int, progress: bool) -> np.ndarray:
    """A selector that needs every row at once, on the driver (its protocol's promise)."""
    step = job.steps[index]
    seed = job.recipe.seed * 1_000_003 + index
    positions, ids, records = [], [], []
    scores: dict[str, list[np.ndarray]] = {}
    for shard in job.shards:
        state = load_state(job, job.steps, shard, pass_index, barrier=False)
        alive = np.flatnonzero(state.alive)
        if isinstance(step, ScoreSelector):
            positions.append(state.pos[alive])
            ids.extend(state.ids[i] for i in alive.tolist())
            for name, column in state.scores.items():
                scores.setdefault(name, []).append(column[alive])
        else:
            wanted = set(state.pos[alive].tolist())
            for batch in job.read(shard, wanted.__contains__):
                records.extend(restore(batch.records, state))
    if isinstance(step, ScoreSelector):
        pos = np.concatenate(positions) if positions else np.zeros(0, np.int64)
        joined = {k: np.concatenate(v) for k, v in scores.items()}
        keep = np.asarray(step.select_indices(ids, joined, seed), dtype=np.int64)
        chosen = pos[keep]
    elif isinstance(step, Selector):
        chosen = np.array([r.metadata["pos"] for r in step.select(records)], dtype=np.int64)
    else:  # plan_passes only makes select ops for selectors
        raise TypeError(f"step {step.name!r} cannot select")
    if len(np.unique(chosen)) != len(chosen):
        raise RuntimeError(f"selector {step.name!r} returned the same row twice")
    return np.sort(chosen)


def _no_rows(job: Job, rejects: int, first: dict[str, Any] | None) -> None:
    """Reading nothing at all is an error that names the inputs, never an empty success."""
    paths = [str(job.recipe.resolve(s.path)) for s in job.specs]
    if rejects:
        # The unreadable rows stay where a successful job puts them, to be looked at.
        job.layout.join([s.index for s in job.shards], kinds=("rejects",))
        raise InputError(
            f"No readable row in {', '.join(paths)}: all {rejects} rows were rejected "
            f"(first: {json.dumps(first, ensure_ascii=False)[:200]}); check the file's format "
            "and the recipe's input shape.",
            field="inputs",
        )
    raise InputError(
        f"No rows in {', '.join(paths)}: the input is empty; give a file with at least one row.",
        field="inputs",
    )


def _write(job: Job, runner: Executor, progress: bool, phases: list[Phase],
           fingerprint: str) -> JobResult:  # fmt: skip
    """The last pass with the write on every shard, then the joins, manifest and report."""
    final = len(job.passes) - 1
    began = time.perf_counter()
    merged = ShardSummary()
    counts = []
    items = [(final, s.index) for s in job.shards]
    for (_, shard), data in zip(items, runner.map(
            job, write_shard, items, desc=f"pass {final + 1}: {_label(job, job.passes[final])}"
            " and write", progress=progress, rows=lambda d: d["rows"]), strict=True):  # fmt: skip
        part = ShardSummary.from_json(data)
        spec = job.shards[shard]
        counts.append({
            "shard": shard, "kept": part.kept, "scores": part.kept, "rejects": part.rejects,
            "dropped": part.rows - part.kept,
            "input": {"path": spec.path, "start": spec.start, "end": spec.end},
        })  # fmt: skip
        merged.merge(part, EXAMPLE_CAPS)
    label = f"pass {final + 1}: {_label(job, job.passes[final])} and write"
    phases.append(Phase(label, merged.rows, time.perf_counter() - began, "map", merged.seconds))
    if final == 0 and not merged.rows:
        _no_rows(job, merged.rejects, None)
    began = time.perf_counter()
    out = job.layout.out
    files = job.layout.join([s.index for s in job.shards])
    manifest = job.layout.write_manifest(fingerprint, counts)
    metrics = {
        s.name: s.report_metrics(merged.observed[s.name])
        for s in job.steps
        if isinstance(s, OutputObserver) and s.name in merged.observed
    }
    report = build_report(job.recipe, job.steps, merged, metrics, out / "report")
    report.worker_peak_mb = merged.peak_mb
    phases.append(Phase("join outputs and report", merged.rows, time.perf_counter() - began,
                        "serial"))  # fmt: skip
    kept = files["kept"] or job.layout.final("kept")
    return JobResult(kept, report, out / "report", files["rejects"], files["scores"],
                     files["dropped"], manifest, resumed=False, seconds=0.0)  # fmt: skip
