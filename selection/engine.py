"""Run a recipe: plan passes, hand them to an executor, reduce on the driver, write outputs.

The driver owns the job's state (:mod:`thresher.selection.state`); executors only map batches. After
each pass and its barrier the whole state is saved, so a killed job resumes at the first unfinished
pass (and, on the local executor, at the first unfinished batch of it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from thresher.core.errors import ConfigError, InputError, NotFoundError
from thresher.core.record import Record
from thresher.core.steps import Selector
from thresher.selection.io import ReadBatch, Reject, Shard, file_format, plan_shards, read_shard
from thresher.selection.plan import ALIVE, BatchOutcome, Op, plan_passes
from thresher.selection.recipe import InputSpec, Recipe, load_recipe
from thresher.selection.registry import (
    OutputObserver,
    PositionFilter,
    RowTable,
    ScoreSelector,
    StepContext,
    combine_stats,
    concatenates,
    step_type,
)
from thresher.selection.report import JobReport, Phase, build_report
from thresher.selection.state import RowState, WorkDir, save_array

ExecutorName = Literal["local", "ray"]


@dataclass
class JobResult:
    """What a job produced: the report and where its files are."""

    output_path: Path
    report: JobReport
    report_dir: Path
    rejects_path: Path | None
    scores_path: Path | None
    dropped_path: Path | None
    resumed: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (paths as strings), e.g. for the API's job status."""
        return {
            "output_path": str(self.output_path),
            "report_dir": str(self.report_dir),
            "rejects_path": str(self.rejects_path) if self.rejects_path else None,
            "scores_path": str(self.scores_path) if self.scores_path else None,
            "dropped_path": str(self.dropped_path) if self.dropped_path else None,
            "resumed": self.resumed,
            "seconds": self.seconds,
            "summary": self.summary(),
            "report": self.report.to_dict(),
        }

    def summary(self) -> str:
        return self.report.summary_line()

    def _repr_html_(self) -> str:
        return self.report._repr_html_()


@dataclass
class Job:
    """Everything a pass needs, picklable (Ray and worker processes receive it)."""

    recipe: Recipe
    shards: list[Shard]
    specs: list[InputSpec]
    context: StepContext
    work: WorkDir
    steps: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def read(
        self, shard: Shard, wanted: Callable[[int], bool] | None = None
    ) -> Iterator[ReadBatch]:
        spec = self.specs[shard.file_index]
        yield from read_shard(
            shard, spec, self.recipe.batch_size, strict=self.recipe.strict, wanted=wanted
        )


class Executor(Protocol):
    """Runs the map side of passes; the driver does everything else."""

    def run_pass(
        self, job: Job, index: int, ops: list[Op], state: RowState | None, progress: bool
    ) -> Iterator[BatchOutcome]: ...

    def iter_batches(
        self, job: Job, progress: bool, desc: str, wanted: Callable[[int], bool] | None = None
    ) -> Iterator[ReadBatch]: ...

    def close(self) -> None: ...


def build_steps(recipe: Recipe, context: StepContext, *, check: bool = False) -> list[Any]:
    """Instantiate every step once, through the registry (constructors store parameters only).

    With ``check`` (the driver, once per job), each step's optional ``check()`` runs too: the
    place for I/O that should fail a job before any work, such as a missing target file or a
    judge backend that does not answer.
    """
    steps = []
    for i, spec in enumerate(recipe.steps):
        try:
            step = step_type(spec.type).factory(spec.name, spec.params, context)
            if check and callable(getattr(step, "check", None)):
                step.check()
            steps.append(step)
        except (InputError, NotFoundError) as exc:
            # Same error class, but the field says which step of the recipe is at fault.
            field_name = f"steps[{i}].{exc.field or 'params'}"
            raise type(exc)(f"steps[{i}] ({spec.name}): {exc}", field=field_name) from exc
    return steps


def restore(records: list[Record], state: RowState | None) -> list[Record]:
    """Keep the records still alive and give them back the scores earlier passes computed."""
    if state is None or not records:
        return records
    ri = state.index(np.array([r.metadata["pos"] for r in records], dtype=np.int64))
    alive = []
    for record, i in zip(records, ri, strict=True):
        if state.drop_step[i] == ALIVE:
            for name, column in state.scores.items():
                if not np.isnan(column[i]):
                    record.scores[name] = float(column[i])
            alive.append(record)
    return alive


def _executor(name: ExecutorName, recipe: Recipe) -> Executor:
    from thresher.selection.executors import EXECUTORS

    try:
        factory = EXECUTORS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown executor {name!r}; use one of {sorted(EXECUTORS)}.", field="executor"
        ) from None
    return factory(workers=recipe.workers)


def run_recipe(
    recipe: str | Path | dict[str, Any] | Recipe,
    output_dir: str | Path,
    *,
    executor: ExecutorName = "local",
    progress: bool = True,
    fresh: bool = False,
    strict: bool | None = None,
    context: StepContext | None = None,
    keep_work: bool = False,
) -> JobResult:
    """Run a selection recipe and write kept rows, rejects, scores and a report.

    Args:
        recipe: a YAML/JSON path, a dict, or a validated :class:`Recipe`.
        output_dir: the job's folder; running again with the same recipe resumes the job.
        executor: ``local`` (processes) or ``ray`` (Ray Data on ``ray.init()``'s cluster).
        progress: show progress bars.
        fresh: discard a previous run's work in ``output_dir`` instead of resuming it.
        strict: make unreadable rows fatal (overrides the recipe's ``strict``).
        context: models and settings for the steps (built lazily by default).
        keep_work: keep ``output_dir/.work`` (batch checkpoints, fit statistics) after the job
            succeeds; by default it is removed then (a killed job keeps it, to resume).

    Returns:
        The :class:`JobResult` with the report and output paths.
    """
    start = time.perf_counter()
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
    base = Path(recipe.base_dir or ".")
    if context is None:
        context = StepContext(seed=recipe.seed, base_dir=base, strict=recipe.strict)
    steps = build_steps(recipe, context, check=True)  # bad steps fail before any work
    _check_score_names(recipe, steps)
    work = WorkDir(out / ".work")
    resumed = work.open(_fingerprint(recipe, paths), fresh=fresh)
    job = Job(recipe, shards, list(recipe.inputs), context, work, steps)
    runner = _executor(executor, recipe)
    phases: list[Phase] = []
    try:
        state = _run_passes(job, runner, progress, phases)
        began = time.perf_counter()
        result = _write_outputs(job, runner, state, out, paths, formats, progress)
        phases.append(Phase("write and report", len(state.pos), time.perf_counter() - began))
    finally:
        runner.close()
    result.report.phases = phases
    result.resumed = resumed
    result.seconds = time.perf_counter() - start
    result.report.seconds = result.seconds
    result.report.notes = job.notes
    result.report.save(result.report_dir)
    if not keep_work:
        import shutil

        shutil.rmtree(work.root, ignore_errors=True)
    return result


def _produced(step: Any) -> list[str]:
    from thresher.core.steps import Scorer

    if not isinstance(step, Scorer):
        return []
    return list(getattr(step, "score_names", None) or [step.name])


def _check_score_names(recipe: Recipe, steps: list[Any]) -> None:
    """A step that reads a score must come after a step that writes it (else: recipe error)."""
    known: list[str] = []
    for i, (spec, step) in enumerate(zip(recipe.steps, steps, strict=True)):
        wanted = getattr(spec.params, "score", None)
        if isinstance(wanted, str) and wanted not in known:
            raise ConfigError(
                f"steps[{i}] ({spec.name}) reads the score {wanted!r}, which no earlier step "
                f"writes; earlier steps write {known or 'no scores'}.",
                field=f"steps[{i}].score",
            )
        known.extend(_produced(step))


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


def _run_passes(job: Job, runner: Executor, progress: bool, phases: list[Phase]) -> RowState:
    passes = plan_passes(job.steps)
    state: RowState | None = None
    for index, ops in enumerate(passes):
        start = time.perf_counter()
        label = ", ".join(f"{op.kind} {job.steps[op.step].name}" for op in ops) or "read"
        saved = job.work.state_path(index)
        if saved.exists():
            state = RowState.load(saved)
            for op in ops:  # refit from the persisted totals; selections are in the state
                if op.kind == "fit":
                    job.steps[op.step].fit_from_stats(np.load(job.work.fit_path(op.step)))
            continue
        # Filters that decide by position run here, on the row state: no row is read for them.
        ops = list(ops)
        on_positions = 0
        while ops and state is not None and _by_position(job, ops[0]):
            _filter_positions(job, state, ops.pop(0))
            on_positions += 1
        if on_positions and not ops and state is not None:
            state.save(saved)
            phases.append(Phase(f"pass {index + 1}: {label} (on positions)", len(state.pos),
                                time.perf_counter() - start))  # fmt: skip
            continue
        outcomes: list[BatchOutcome] = []
        totals: dict[int, np.ndarray] = {}
        # Concatenated statistics (one row per record, e.g. dedup signatures) are copied once
        # into a table of the rows alive at the start of the pass (at most that many reach a
        # fit), never joined batch by batch (quadratic) nor kept twice (pieces and their join).
        tables = {
            op.step: RowTable(int(state.alive.sum()) if state is not None else None)
            for op in ops
            if op.kind == "fit" and concatenates(job.steps[op.step])
        }
        rejects: list[Reject] = []
        for outcome in runner.run_pass(job, index, ops, state, progress):
            for step, stats in outcome.stats.items():
                if step in tables:
                    tables[step].add(stats)
                else:
                    totals[step] = combine_stats(job.steps[step], totals.get(step), stats)
            rejects.extend(outcome.rejects)
            outcome.stats, outcome.rejects = {}, []
            outcomes.append(outcome)
        for step, table in tables.items():
            if table.seen:
                totals[step] = table.result()
        del tables
        if state is None:
            state = RowState.from_outcomes(outcomes)
            _save_rejects(job, rejects)
            if not len(state.pos):
                _no_rows(job, rejects)
        else:
            state.merge(outcomes)
        del outcomes
        for op in ops:
            if op.kind == "fit":
                step = job.steps[op.step]
                total = totals.get(op.step)
                if total is None:
                    total = step.fit_stats([])
                save_array(job.work.fit_path(op.step), total)
                step.fit_from_stats(total)
            elif op.kind == "select":
                _select(job, runner, state, op, progress)
        state.save(saved)
        phases.append(
            Phase(f"pass {index + 1}: {label}", len(state.pos), time.perf_counter() - start)
        )
    if state is None:  # plan_passes always yields a first pass
        raise RuntimeError("the job ran no pass")
    for step in job.steps:  # what a fitted step could not judge, said once, after every fit
        job.notes.extend(getattr(step, "fit_notes", list)())
    return state


def _by_position(job: Job, op: Op) -> bool:
    return op.kind == "filter" and isinstance(job.steps[op.step], PositionFilter)


def _filter_positions(job: Job, state: RowState, op: Op) -> None:
    """Apply a :class:`PositionFilter` to the rows still alive, as a pass's map would."""
    alive = np.flatnonzero(state.alive)
    if not len(alive):
        return
    step = job.steps[op.step]
    mask, why = step.keep_positions(state.pos[alive])
    mask = np.asarray(mask, dtype=bool)
    for j in np.flatnonzero(~mask).tolist():
        state.drop_step[alive[j]] = op.step
        state.reasons[alive[j]] = why[j] or f"dropped by {step.name}"


def _no_rows(job: Job, rejects: list[Reject]) -> None:
    """Reading nothing at all is an error that names the inputs, never an empty success."""
    paths = [str(job.recipe.resolve(s.path)) for s in job.specs]
    if rejects:
        # The unreadable rows stay where a successful job puts them, to be looked at.
        (job.work.root.parent / "rejects.jsonl").write_bytes(job.work.rejects_path().read_bytes())
        first = rejects[0].to_dict()
        raise InputError(
            f"No readable row in {', '.join(paths)}: all {len(rejects)} rows were rejected "
            f"(first: {json.dumps(first, ensure_ascii=False)[:200]}); check the file's format "
            "and the recipe's input shape.",
            field="inputs",
        )
    raise InputError(
        f"No rows in {', '.join(paths)}: the input is empty; give a file with at least one row.",
        field="inputs",
    )


def _save_rejects(job: Job, rejects: list[Reject]) -> None:
    rejects.sort(key=lambda r: (r.source, r.line))
    path = job.work.rejects_path()
    tmp = path.with_name(".rejects.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rejects:
            fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(path)


def _select(job: Job, runner: Executor, state: RowState, op: Op, progress: bool) -> None:
    step = job.steps[op.step]
    alive = np.flatnonzero(state.alive)
    seed = job.recipe.seed * 1_000_003 + op.step
    if isinstance(step, ScoreSelector):
        scores = {name: column[alive] for name, column in state.scores.items()}
        keep = np.asarray(step.select_indices(list(state.ids[alive]), scores, seed), dtype=int)
        kept_rows = alive[keep]
    elif isinstance(step, Selector):
        records = [
            r
            for b in runner.iter_batches(job, progress, f"gather for {step.name}")
            for r in restore(b.records, state)
        ]
        chosen = step.select(records)
        kept_rows = state.index(np.array([r.metadata["pos"] for r in chosen], dtype=np.int64))
    else:  # plan_passes only makes select ops for selectors
        raise TypeError(f"step {step.name!r} cannot select")
    if len(np.unique(kept_rows)) != len(kept_rows) or not np.isin(kept_rows, alive).all():
        raise RuntimeError(f"selector {step.name!r} returned duplicate or dropped rows")
    wanted = next(
        (getattr(getattr(step, "params", None), k, None) for k in ("num", "k", "budget")
         if isinstance(getattr(getattr(step, "params", None), k, None), int)),
        None,
    )  # fmt: skip
    if wanted is not None and wanted > len(alive):
        job.notes.append(
            f"{step.name} asked for {wanted} rows but only {len(alive)} were left, so it kept all"
        )
    dropped = np.setdiff1d(alive, kept_rows)
    state.drop_step[dropped] = op.step
    state.reasons[dropped] = f"not selected by {step.name}"


def _write_outputs(
    job: Job,
    runner: Executor,
    state: RowState,
    out: Path,
    paths: list[Path],
    formats: list[str],
    progress: bool,
) -> JobResult:
    from thresher.selection.outputs import OutputSink

    observers = [s for s in job.steps if isinstance(s, OutputObserver)]
    totals: dict[str, np.ndarray] = {}
    sink = OutputSink(job.recipe, out, paths, formats, [s.name for s in job.steps])
    sink.bind(state)
    try:
        for batch in runner.iter_batches(job, progress, "write", sink.wants):
            kept = sink.add(batch.records, state)
            for observer in observers:
                if kept:
                    stats = np.asarray(observer.output_stats(kept))
                    name = observer.name
                    totals[name] = totals[name] + stats if name in totals else stats
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    metrics: dict[str, dict[str, float]] = {}
    for observer in observers:
        if observer.name in totals:
            metrics[observer.name] = observer.report_metrics(totals[observer.name])
    rejects_path = out / "rejects.jsonl"
    source = job.work.rejects_path()
    n_rejects = 0
    if source.exists() and source.stat().st_size:
        rejects_path.write_bytes(source.read_bytes())
        n_rejects = sum(1 for _ in rejects_path.open(encoding="utf-8"))
    else:
        rejects_path.unlink(missing_ok=True)
    report = build_report(
        job.recipe,
        job.steps,
        state,
        sink.examples,
        metrics,
        n_rejects,
        out / "report",
    )
    return JobResult(
        output_path=sink.output_path,
        report=report,
        report_dir=out / "report",
        rejects_path=rejects_path if n_rejects else None,
        scores_path=sink.scores_path,
        dropped_path=sink.dropped_path,
        resumed=False,
        seconds=0.0,
    )
