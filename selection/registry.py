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
``factory(name, params, context)`` once per process (once per Ray actor) and must return an
object implementing one or more capabilities, found by protocol:

- :class:`thresher.core.steps.Scorer` ``score(records) -> ndarray``: a map; the executor writes
  ``record.scores[step.name]``. A scorer with a ``score_names`` list returns one column per
  name (shape ``(n, len(score_names))``) and each lands under its own name.
- :class:`thresher.core.steps.Filter` ``keep(records) -> (mask, reasons)``: a map; dropped rows are
  counted and shown in the report under their reason.
- :class:`ScoreSelector` ``select_indices(ids, scores, seed) -> indices``: a global decision made
  on the driver from the gathered scores alone (memory O(rows), never O(text)); ``ids`` and
  every ``scores[name]`` list the rows still alive, in input-position order.
- :class:`thresher.core.steps.Selector` ``select(records, k)``: a global decision over gathered
  records (holds every surviving record in memory; prefer :class:`ScoreSelector` when scores
  suffice).
- :class:`Fitted` ``fit_stats(records) -> ndarray`` and ``fit_from_stats(total)``: a step that
  needs a pass over its input first; the executor sums ``fit_stats`` over all batches (map,
  then driver-side reduction) and persists the sum, so resumed jobs refit without re-reading.
  A step with ``fit_reduce = "concat"`` gets the per-batch arrays concatenated along axis 0 in
  row-position order instead (e.g. one signature or embedding row per record, for dedup or
  diversity), an array of O(rows) that is persisted the same way.
- :class:`PositionFilter` ``keep_positions(pos) -> (mask, reasons)``: a filter (it implements
  ``keep`` too) that decides from row positions alone, e.g. a fitted dedup step; the driver
  applies it to the row state without reading the rows again.
- :class:`OutputObserver` ``output_stats(kept_records) -> ndarray`` and
  ``report_metrics(total) -> dict``: extra numbers for the job report computed over the kept rows.

Models and backends come through :class:`StepContext`: ``context.provider`` is a lazily built
:class:`thresher.core.models.ModelProvider` (one per process; callers that already hold one pass it
with ``StepContext.with_models``), ``context.backend`` a
:class:`thresher.core.backends.ChatBackend`. A step asks for its model in ``__init__`` or on first
use and keeps it, never per batch. Contexts travel to worker processes and Ray actors without their
models, which each process loads once.

A step applies its operations in this order: fit, score, filter, select (see
:mod:`thresher.selection.plan`); the same recipe and seed select the same rows on every executor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from thresher.core.errors import ConfigError
from thresher.core.record import Record

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
class PositionFilter(Protocol):
    """A filter whose verdict on a row depends on the row's position only (what a fitted
    dedup step decided about it): the driver applies it to the row state, reading no row."""

    name: str

    def keep_positions(self, pos: np.ndarray) -> tuple[np.ndarray, list[str | None]]: ...


@runtime_checkable
class OutputObserver(Protocol):
    """A step that adds metrics to the report from summed statistics of the kept rows."""

    name: str

    def output_stats(self, records: Sequence[Record]) -> np.ndarray: ...

    def report_metrics(self, total: np.ndarray) -> dict[str, float]: ...


def combine_stats(step: Any, total: np.ndarray | None, part: np.ndarray) -> np.ndarray:
    """Reduce two batches' fit statistics: a sum, or a concatenation (``fit_reduce``)."""
    if total is None:
        return np.array(part, copy=True)
    merge = getattr(step, "merge_stats", None)
    if merge is not None:
        return np.asarray(merge(total, part))
    if getattr(step, "fit_reduce", "sum") == "concat":
        return np.concatenate([total, part], axis=0)
    return total + part


class RowTable:
    """Per-batch row blocks in arrival order, as one array; with a known bound on the rows,
    each block is copied straight into its place (else the blocks are joined at the end)."""

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self.rows = 0
        self.seen = False
        self.table: np.ndarray | None = None
        self.blocks: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        self.seen = True
        if self.table is None and not self.blocks and self.capacity is not None and block.ndim:
            self.table = np.empty((self.capacity, *block.shape[1:]), dtype=block.dtype)
        fits = (
            self.table is not None
            and block.dtype == self.table.dtype
            and block.shape[1:] == self.table.shape[1:]
            and self.rows + len(block) <= len(self.table)
        )
        if not fits and self.table is not None:  # never expected: fall back to joining
            self.blocks, self.table = [self.table[: self.rows]], None
        if self.table is not None:
            self.table[self.rows : self.rows + len(block)] = block
        else:
            self.blocks.append(block)
        self.rows += len(block)

    def result(self) -> np.ndarray:
        if self.table is not None:
            return self.table[: self.rows]
        return np.concatenate(self.blocks, axis=0)


def concatenates(step: Any) -> bool:
    """Whether a step's fit statistics are concatenated (see :func:`combine_stats`)."""
    return getattr(step, "merge_stats", None) is None and (
        getattr(step, "fit_reduce", "sum") == "concat"
    )


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
