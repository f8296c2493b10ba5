"""Quality steps for instruction data: rules, dedup, diversity, judge, perplexity/IFD and a
learned classifier (see selection.quality, selection.dedup, selection.diversity)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from thresher.core.record import Record
from thresher.core.steps import Filter, Scorer, Selector
from thresher.selection.dedup import Deduplicator
from thresher.selection.quality.classifier import QualityClassifier
from thresher.selection.quality.heuristics import DEFAULT_RULES, RuleName
from thresher.selection.quality.perplexity import PerplexityScorer
from thresher.selection.quality.rulefilter import HeuristicFilter, merge_rule_stats
from thresher.selection.registry import (
    Checked,
    FitNotes,
    Fitted,
    Grouped,
    MergedStats,
    MultiScorer,
    RowRequester,
    ScoreReader,
    StepContext,
    StepParams,
    register_step,
)


class RulesParams(StepParams):
    rules: list[RuleName] = Field(default_factory=lambda: list(DEFAULT_RULES))


@register_step("quality_rules", params=RulesParams, example={})
class QualityRules(Fitted, MergedStats, FitNotes, MultiScorer, Filter):
    """Heuristic rules on instruction, input and every response; each firing rule is a reason.

    Fitted over the whole input first (template lengths, the requests' character model, from
    statistics that merge across shards), then applied batch by batch. Writes
    ``<name>.fluency`` (bits per character of the row under that model; near-duplicate removal
    keeps the copy that reads best by it).
    """

    def __init__(self, name: str, params: RulesParams, context: StepContext) -> None:
        self.name = name
        self.filter = HeuristicFilter(rules=tuple(params.rules), name=name)
        self.score_names = [f"{name}.fluency"]
        self._compacted = 0  # the merged table's length when it was last compacted

    def fit_stats(self, records: Sequence[Record]) -> np.ndarray:
        return self.filter.fit_stats(records)

    def merge_stats(self, total: np.ndarray, part: np.ndarray) -> np.ndarray:
        # Appended, and compacted only when the table doubles (merging every batch into the
        # whole total would be quadratic); fit_from_stats merges whatever it gets, so the
        # model does not depend on when compaction happened.
        combined = np.concatenate([total, part])
        if len(combined) > 2 * self._compacted:
            combined = merge_rule_stats(combined)
            self._compacted = len(combined)
        return combined

    def fit_from_stats(self, total: np.ndarray) -> None:
        self.filter.fit_from_stats(total)

    def fit_notes(self) -> list[str]:
        return self.filter.fit_notes()

    def score(self, records: Sequence[Record]) -> np.ndarray:
        return self.filter.fluency(records)

    def keep(self, records: Sequence[Record]) -> tuple[np.ndarray, list[str | None]]:
        return self.filter.keep(records)


class DedupParams(StepParams):
    method: Literal["exact", "minhash", "semantic"] = "minhash"
    threshold: float = Field(0.7, gt=0, le=1)
    ngram: int = Field(3, ge=1)
    num_perm: int = Field(128, ge=16)
    max_df: float = Field(0.01, gt=0, le=1, description="No effect (kept for old recipes).")
    prefer: Literal["first", "fluent", "score"] = Field(
        "fluent",
        description="Copy to keep: first, fluent (lowest '*.fluency' score, written by a "
        "quality_rules step before this one; rows without one rank last) or score.",
    )
    score: str | None = None
    largest: bool = True


@register_step("dedup", params=DedupParams, example={"method": "exact"})
class DedupStep(Grouped, ScoreReader):
    """Drops exact, near (MinHash) or semantic duplicates, keeping one copy per cluster; each
    dropped row's reason names the id it duplicates.

    A :class:`thresher.selection.registry.Grouped` step: every row gives its signature and keys
    (an exact hash, its LSH bands, or one key shared by all rows for semantic dedup), the keys
    are shuffled so that equal ones meet, and the clusters their edges form keep their lowest
    (cost, position) copy (see :mod:`thresher.selection.dedup`).
    """

    def __init__(self, name: str, params: DedupParams, context: StepContext) -> None:
        self.name = name
        self.params = params
        self.context = context
        self._dedup: Deduplicator | None = None

    def reads_score(self) -> str | None:
        return self.params.score

    @property
    def dedup(self) -> Deduplicator:
        if self._dedup is None:
            p = self.params
            embedder = self.context.provider.embedder() if p.method == "semantic" else None
            self._dedup = Deduplicator(
                method=p.method, threshold=p.threshold, ngram=p.ngram, num_perm=p.num_perm,
                max_df=p.max_df, prefer=p.prefer, score=p.score, largest=p.largest,
                embedder=embedder, name=self.name,
            )  # fmt: skip
        return self._dedup

    def group_rows(self, records: Sequence[Record]) -> np.ndarray:
        pos = np.array([r.metadata.get("pos", i) for i, r in enumerate(records)], dtype=np.int64)
        # Costs come from each row's own scores, never from a model of the batch.
        return self.dedup.rows(records, self.dedup.costs(records, fit_missing=False), pos)

    def group_keys(self, rows: np.ndarray) -> np.ndarray:
        return self.dedup.keys(rows)

    def group_edges(self, keys: np.ndarray, rows: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return self.dedup.edges(keys, rows)

    def drop_reason(self, keeper_id: str) -> str:
        return f"{self.params.method} duplicate of {keeper_id}"


class DiversityParams(StepParams):
    budget: int = Field(gt=0)
    strategy: Literal["kcenter", "score_first"] = "kcenter"
    score: str | None = None
    min_distance: float = Field(0.1, ge=0, le=2)


@register_step("diversity", params=DiversityParams, example={"budget": 5})
class DiversityStep(Selector, ScoreReader, RowRequester):
    """Keeps a diverse subset of at most ``budget`` rows (k-center greedy or DEITA score-first)."""

    def __init__(self, name: str, params: DiversityParams, context: StepContext) -> None:
        self.name = name
        self.params = params
        self.context = context

    def reads_score(self) -> str | None:
        return self.params.score

    def requested_rows(self) -> int:
        return self.params.budget

    def select(self, records: Sequence[Record], k: int | None = None) -> list[Record]:
        from thresher.selection.diversity import DiverseSubset

        p = self.params
        subset = DiverseSubset(
            self.context.provider.embedder(), p.budget, p.strategy, p.score, p.min_distance,
            name=self.name,
        )  # fmt: skip
        return subset.select(records, k)


class JudgeParams(StepParams):
    backend: str = Field(description="'local' or an OpenAI-compatible base URL (.../v1).")
    model: str = "judge"
    optional: bool = Field(False, description="Record ratings as missing if the judge is down.")
    concurrency: int = Field(8, gt=0)
    retries: int = Field(3, ge=0)
    timeout: float = Field(60.0, gt=0)


# No conformance example: rating 400 rows with a generating LM is a job, not a unit test; the
# judge is tested against a real server in tests/selection/quality/test_judge.py.
@register_step("judge", params=JudgeParams)
class JudgeStep(Scorer, Checked):
    """AlpaGasus-style 0-5 rating by an LLM; missing ratings are NaN, never a default."""

    def __init__(self, name: str, params: JudgeParams, context: StepContext) -> None:
        self.name = name
        self.params = params
        self.context = context
        self._judge: Any = None
        self.available: bool | None = None  # found out by check(), on first use at the latest

    @property
    def judge(self) -> Any:
        """The :class:`LLMJudge`, built (and its model loaded) on first use."""
        if self._judge is None:
            from thresher.selection.quality.judge import LLMJudge

            p = self.params
            # retries=0: the backend retries, by the one policy of core/retry.py.
            self._judge = LLMJudge(
                self._backend(p, self.context), model=p.model,
                concurrency=p.concurrency, retries=0, name=self.name,
            )  # fmt: skip
        return self._judge

    def check(self) -> None:
        """Ask the judge once; a backend that is down fails the job unless ``optional``."""
        import asyncio

        from thresher.core.errors import BackendError

        self.available = True
        try:
            asyncio.run(self.judge.check())
        except BackendError:
            if not self.params.optional:
                raise
            self.available = False

    @staticmethod
    def _backend(params: JudgeParams, context: StepContext):  # type: ignore[no-untyped-def]
        from functools import partial

        from thresher.core.backends import make_backend

        if params.backend == "local":
            return make_backend("local", provider=context.provider, max_new_tokens=48)
        # One HTTP client per event loop: the judge opens and closes it around each batch. The
        # backend retries by the one policy (core/retry.py); the judge's own loop is off.
        return partial(make_backend, params.backend, timeout=params.timeout, retries=params.retries)

    def score(self, records: Sequence[Record]) -> np.ndarray:
        if self.available is None:
            self.check()
        if not self.available:
            return np.full(len(records), np.nan)
        return self.judge.score(records)


class PerplexityParams(StepParams):
    model: str | None = Field(None, description="Causal LM (default: the settings' scorer).")
    max_prompt_tokens: int = Field(384, ge=0)
    max_response_tokens: int = Field(128, gt=0)


@register_step("perplexity", params=PerplexityParams, example={"max_response_tokens": 8})
class PerplexityStep(MultiScorer):
    """PPL of each response given its request, alone, and their ratio IFD (Superfiltering)."""

    def __init__(self, name: str, params: PerplexityParams, context: StepContext) -> None:
        self.name = name
        self.params = params
        self.context = context
        self.score_names = [name, f"{name}.alone", f"{name}.ifd"]
        self._scorer: PerplexityScorer | None = None

    def score(self, records: Sequence[Record]) -> np.ndarray:
        if self._scorer is None:
            provider = self.context.provider
            lm = provider.scorer(self.params.model) if self.params.model else provider.scorer()
            self._scorer = PerplexityScorer(
                lm, self.params.max_prompt_tokens, self.params.max_response_tokens, self.name
            )
        return self._scorer.score(records)


class ClassifierParams(StepParams):
    path: str = Field(description="Folder written by QualityClassifier.save.")


@register_step("classifier", params=ClassifierParams)
class ClassifierStep(Scorer, Checked):
    """P(good) from a hashed n-gram classifier fitted on a good set versus a raw set."""

    def __init__(self, name: str, params: ClassifierParams, context: StepContext) -> None:
        self.name = name
        self.path = context.resolve(params.path)
        self._model: QualityClassifier | None = None

    def check(self) -> None:
        """Load the classifier once on the driver: a bad folder fails before any work."""
        self.model  # noqa: B018

    @property
    def model(self) -> QualityClassifier:
        if self._model is None:
            self._model = QualityClassifier.load(self.path)
        return self._model

    def score(self, records: Sequence[Record]) -> np.ndarray:
        return self.model.score(records)
