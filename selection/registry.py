"""The step registry: recipe step types resolved by name, so new steps never touch the engine.

How to add a step type (the contract other packages rely on)::

    from thresher.selection.registry import StepContext, StepParams, register_step

    class LengthParams(StepParams):          # extra keys are rejected, naming the key
        field: str = "text"

    @register_step("length", params=LengthParams, example={"field": "text"})
    class LengthScorer:
        def __init__(self, name: str, params: LengthParams, context: StepContext) -> None:
            self.name = name                 # store only; load nothing heavy per batch
            self.params = params
        def score(self, records):            # core.steps.Scorer
            return np.array([len(r.content) for r in records], dtype=np.float64)

Put the module in :mod:`thresher.selection.steps` (every module there is imported when a recipe is
resolved) or import it yourself before running a recipe. A registered factory is called as
``factory(name, params, context)`` once per process (and Ray worker process) and must return an
object implementing one or more capabilities, found by protocol:

- :class:`thresher.core.steps.Scorer` ``score(records) -> ndarray``: a map; the executor writes
  ``record.scores[step.name]``. A :class:`MultiScorer` (a ``score_names`` list) returns one
  column per name (shape ``(n, len(score_names))``) and each lands under its own name.
- :class:`thresher.core.steps.Filter` ``keep(records) -> (mask, reasons)``: a map; dropped rows are
  counted and shown in the report under their reason.
- :class:`RankSelector` ``rank_quotas(alive)`` and ``rank_keys(scores, column, start, alive,
  seed)``: a global decision that keeps, for each key column in turn, the ``quota`` rows with
  the highest keys (ties to the earlier row), never a row an earlier column took. Keys are a
  function of a row's scores and its index among the rows alive (``start`` is the index of the
  first row given), so each shard computes its own and a distributed top-k merge picks the
  same rows as one sort of them all (DSIR's Gumbel-top-k resampling, top-k on a score). The
  driver holds counts, never the rows' keys.
- :class:`ScoreSelector` ``select_indices(ids, scores, seed) -> indices``: a global decision
  from the gathered scores of every row still alive (the driver holds O(rows) numbers, never
  text; prefer :class:`RankSelector` where the decision is a top-k).
- :class:`thresher.core.steps.Selector` ``select(records, k)``: a global decision over gathered
  records (the driver holds every surviving record; prefer the two above when scores suffice).
- :class:`Fitted` ``fit_stats(records) -> ndarray`` and ``fit_from_stats(total)``: a step that
  needs a pass over its input first; each shard sums ``fit_stats`` over its batches, the driver
  sums the shards' totals and persists the result, so resumed jobs refit without re-reading.
  A :class:`MergedStats` step reduces two parts with ``merge_stats(total, part)`` instead of a
  sum; a :class:`ConcatStats` step (``fit_reduce = "concat"``) gets the per-batch arrays
  concatenated along axis 0 in row-position order: an array of O(rows) that the driver holds,
  so such steps suit small inputs only. A :class:`FitNotes` step says, after every fit, what
  its statistics left it unable to judge (``fit_notes() -> list[str]``, shown in the report).
- :class:`Grouped` ``group_rows``, ``group_keys``, ``group_edges`` and ``drop_reason``: keeps one
  row of each group of related rows across the whole input (deduplication), as a distributed
  shuffle: each shard writes one row per record (its position, id, rank ``cost`` and
  signature) and its keys, the keys are partitioned by hash and each partition turns its equal
  keys into edges between rows, and one task finds the connected groups and keeps each one's
  lowest (cost, position) row. The next pass drops the others by position, with
  ``drop_reason(keeper_id)``.
- :class:`OutputObserver` ``output_stats(kept_records) -> ndarray`` and
  ``report_metrics(total) -> dict``: extra numbers for the job report computed over the kept rows.

Three declarations help the driver check a recipe and explain its result:

- :class:`Checked` ``check()``: runs once on the driver before any work, the place for I/O that
  should fail a job early (a missing target file, a judge backend that does not answer).
- :class:`ScoreReader` ``reads_score() -> str | None``: the score a step reads, which an earlier
  step must write (else the recipe is refused, naming both).
- :class:`RowRequester` ``requested_rows() -> int | None``: the fixed number of rows a selector
  asks for (``None`` for a fraction); the report notes when fewer were left.

Models and backends come through :class:`StepContext`: ``context.provider`` is a lazily built
:class:`thresher.core.models.ModelProvider` (one per process; callers that already hold one pass it
with ``StepContext.with_models``), ``context.backend`` a
:class:`thresher.core.backends.ChatBackend`. A step asks for its model in ``__init__`` or on first
use and keeps it, never per batch. Contexts travel to worker processes and Ray tasks without their
models, which each process loads once.

A step applies its operations in this order: fit (or group), score, filter, select (see
:mod:`thresher.selection.plan`); the same recipe and seed select the same rows on every executor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from thresher.core.errors import ConfigError
from thresher.core.record import Record
from thresher.core.steps import Scorer

if TYPE_CHECKING:
    from thresher.core.backends import ChatBackend
    from thresher.core.models import ModelProvider
    from thresher.core.settings import Settings


class StepParams(BaseModel):
    """Base of every step's parameters: unknown keys are errors that name the key."""

    model_config = ConfigDict(extra="forbid")


@runtime_checkable
class ScoreSelector(Protocol):
    """A global decision from scores only; returns the indices (into ``ids``) to keep."""

    name: str

    def select_indices(
        self, ids: Sequence[str], scores: dict[str, np.ndarray], seed: int
    ) -> np.ndarray: ...


@runtime_checkable
class Fitted(Protocol):
    """A step whose model is the sum (or concatenation) of per-batch statistics of its input."""

    name: str

    def fit_stats(self, records: Sequence[Record]) -> np.ndarray: ...

    def fit_from_stats(self, total: np.ndarray) -> None: ...


@runtime_checkable
class RankSelector(Protocol):
    """A top-k over keys each shard computes for its own rows (see the module docstring)."""

    name: str

    def rank_quotas(self, alive: int) -> list[int]: ...

    def rank_keys(
        self, scores: dict[str, np.ndarray], column: int, start: int, alive: int, seed: int
    ) -> np.ndarray: ...


@runtime_checkable
class Grouped(Protocol):
    """Keeps one row per group of related rows, found by a shuffle (see the module docstring).

    ``group_rows`` returns a structured array with one row per record and at least the fields
    ``pos`` (int64), ``cost`` (float64, lower is kept) and ``id`` (bytes); ``group_keys`` a
    structured array of ``band`` (uint32), ``key`` (uint64) and ``pos`` for some of those rows;
    ``group_edges`` gets one partition's keys sorted by (band, key, pos), all of a key's rows
    together, and a lookup of ``group_rows`` rows by position, and returns ``(m, 2)`` position
    pairs of rows that belong together.
    """

    name: str

    def group_rows(self, records: Sequence[Record]) -> np.ndarray: ...

    def group_keys(self, rows: np.ndarray) -> np.ndarray: ...

    def group_edges(
        self, keys: np.ndarray, rows: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray: ...

    def drop_reason(self, keeper_id: str) -> str: ...


@runtime_checkable
class OutputObserver(Protocol):
    """A step that adds metrics to the report from summed statistics of the kept rows."""

    name: str

    def output_stats(self, records: Sequence[Record]) -> np.ndarray: ...

    def report_metrics(self, total: np.ndarray) -> dict[str, float]: ...


@runtime_checkable
class MergedStats(Protocol):
    """A :class:`Fitted` step whose statistics do not add up: it reduces two parts itself."""

    def merge_stats(self, total: np.ndarray, part: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class ConcatStats(Protocol):
    """A :class:`Fitted` step whose statistics are rows to concatenate in row-position order
    (``fit_reduce = "concat"``), not to sum; the driver holds them all (small inputs only)."""

    fit_reduce: Literal["concat"]


@runtime_checkable
class FitNotes(Protocol):
    """A :class:`Fitted` step that says what its fitted statistics leave unjudged (for the
    report: a rule with too little data to model, say), asked once after every fit."""

    def fit_notes(self) -> list[str]: ...


@runtime_checkable
class MultiScorer(Scorer, Protocol):
    """A scorer that writes several scores: one column per name, in this order."""

    score_names: list[str]


@runtime_checkable
class ScoreReader(Protocol):
    """A step that reads a score (``None``: not in this configuration); an earlier step must
    write it, which the driver checks before any work."""

    def reads_score(self) -> str | None: ...


@runtime_checkable
class RowRequester(Protocol):
    """A selector asking for a fixed number of rows (``None``: a fraction of what is left)."""

    def requested_rows(self) -> int | None: ...


@runtime_checkable
class Checked(Protocol):
    """A step with I/O to do once on the driver before any work, so that a bad recipe fails
    early (a missing file, a backend that does not answer)."""

    def check(self) -> None: ...


def score_names(step: Any) -> list[str]:
    """The scores a step writes: none unless it is a scorer, else its name or its names."""
    if not isinstance(step, Scorer):
        return []
    return list(step.score_names) if isinstance(step, MultiScorer) else [step.name]


def concatenates(step: Any) -> bool:
    """Whether a step's fit statistics are concatenated (see :func:`combine_stats`)."""
    return isinstance(step, ConcatStats) and not isinstance(step, MergedStats)


def combine_stats(step: Any, total: np.ndarray | None, part: np.ndarray) -> np.ndarray:
    """Reduce two parts' fit statistics: ``merge_stats``, a concatenation, or a sum."""
    if total is None:
        return np.array(part, copy=True)
    if isinstance(step, MergedStats):
        return np.asarray(step.merge_stats(total, part))
    if concatenates(step):
        return np.concatenate([total, part], axis=0)
    return total + part


@dataclass
class StepContext:
    """What the executor hands every step factory: models, settings, seed and file access.

    Picklable (Ray ships it to workers); the model provider is built on first use per process.
    """

    seed: int = 0
    base_dir: Path = field(default_factory=Path.cwd)
    settings: Settings | None = None
    strict: bool = False
    _provider: ModelProvider | None = field(default=None, repr=False)
    _backend: ChatBackend | None = field(default=None, repr=False)

    @classmethod
    def with_models(
        cls, provider: ModelProvider, backend: ChatBackend | None = None, **kwargs: Any
    ) -> StepContext:
        """A context reusing models and a backend the caller already loaded (API, notebooks)."""
        return cls(_provider=provider, _backend=backend, **kwargs)

    @property
    def provider(self) -> ModelProvider:
        """The process-wide :class:`thresher.core.models.ModelProvider`, loaded lazily."""
        if self._provider is None:
            from thresher.core.models import ModelProvider

            self._provider = ModelProvider.from_settings(self._settings())
        return self._provider

    @property
    def backend(self) -> ChatBackend:
        """The chat backend for LLM-judge steps: the one given, else the one settings name."""
        if self._backend is None:
            from thresher.core.backends import make_backend

            settings = self._settings()
            local = settings.backend == "local"
            self._backend = make_backend(
                settings.backend,
                provider=self.provider if local else None,
                local_model=settings.local_model,
                max_new_tokens=settings.local_max_new_tokens,
                api_key=settings.backend_api_key,
                timeout=settings.backend_timeout,
            )
        return self._backend

    def _settings(self) -> Settings:
        if self.settings is None:
            from thresher.core.settings import load_settings

            self.settings = load_settings()
        return self.settings

    def resolve(self, path: str | Path) -> Path:
        """A recipe path, relative to the recipe's folder unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def __getstate__(self) -> dict[str, Any]:
        # Models never travel to workers: each process builds its own provider on first use.
        state = dict(self.__dict__)
        state["_provider"] = None
        state["_backend"] = None
        return state


StepFactory = Callable[[str, Any, StepContext], Any]
F = TypeVar("F", bound=StepFactory)


@dataclass(frozen=True)
class StepType:
    """A registered step type: its name, its parameter model and its factory."""

    name: str
    params: type[StepParams]
    factory: StepFactory
    doc: str = ""
    example: dict[str, Any] | None = None


STEP_TYPES: dict[str, StepType] = {}


def register_step(
    name: str, *, params: type[StepParams] = StepParams, example: dict[str, Any] | None = None
) -> Callable[[F], F]:
    """Register a step factory (often a class) under ``name`` for recipes to use.

    ``example`` is a small, valid parameter set; the conformance test in
    ``tests/selection/test_step_conformance.py`` runs every registered type with it.
    """

    def decorate(factory: F) -> F:
        if name in STEP_TYPES and STEP_TYPES[name].factory is not factory:
            raise ConfigError(f"Step type {name!r} is already registered.", field="type")
        doc = (factory.__doc__ or "").strip().split("\n")[0]
        STEP_TYPES[name] = StepType(name, params, factory, doc, example)
        return factory

    return decorate


def step_type(name: str) -> StepType:
    """Look a step type up by name, loading the built-in and entry-point steps first."""
    load_builtin_steps()
    try:
        return STEP_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(STEP_TYPES))
        raise ConfigError(
            f"Unknown step type {name!r}; use one of: {known}.", field="steps.type"
        ) from None


def load_builtin_steps() -> None:
    """Import every module of :mod:`thresher.selection.steps`, each of which registers its steps.

    A new step type is a new module in that package (no edit here); its import must stay cheap
    (heavy libraries are imported inside functions).
    """
    import importlib
    import pkgutil

    import thresher.selection.steps as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
