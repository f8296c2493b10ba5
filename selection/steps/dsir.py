"""The ``dsir`` recipe step: importance resampling toward one or more target datasets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from thresher.core.errors import ConfigError, NotFoundError
from thresher.core.record import Record
from thresher.selection.dsir import HashedNgramDSIR
from thresher.selection.io import read_records
from thresher.selection.recipe import InputSpec
from thresher.selection.registry import (
    Checked,
    Fitted,
    MultiScorer,
    OutputObserver,
    RankSelector,
    RowRequester,
    StepContext,
    StepParams,
    register_step,
)


class DSIRParams(StepParams):
    target: list[InputSpec] = Field(min_length=1, description="Target datasets (files).")
    proportions: list[float] | None = None
    num: int | None = Field(None, gt=0, description="Rows to select.")
    fraction: float | None = Field(None, gt=0, le=1)
    ngrams: int = Field(2, ge=1, le=5)
    buckets: int = Field(10000, ge=16)
    smoothing: float = Field(1.0, gt=0)
    method: Literal["gumbel", "topk"] = "gumbel"
    target_mode: Literal["mixture", "separate"] = "mixture"

    @field_validator("target", mode="before")
    @classmethod
    def _paths(cls, value: object) -> object:
        if isinstance(value, str | dict):
            value = [value]
        if isinstance(value, list):
            return [{"path": v, "shape": "auto"} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _size(self) -> DSIRParams:
        if (self.num is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'num' and 'fraction'")
        if self.proportions is not None and len(self.proportions) != len(self.target):
            raise ValueError(
                f"'proportions' has {len(self.proportions)} values for {len(self.target)} targets"
            )
        return self


@register_step("dsir", params=DSIRParams)
class DSIRStep(Fitted, MultiScorer, RankSelector, RowRequester, Checked, OutputObserver):
    """DSIR (Xie et al. 2023): fit on the raw stream, weight every row, resample ``num`` rows."""

    def __init__(self, name: str, params: DSIRParams, context: StepContext) -> None:
        self.name = name
        self.params = params
        self.context = context
        self.model = HashedNgramDSIR(
            params.ngrams, params.buckets, params.smoothing, params.target_mode, params.proportions
        )
        self._target_fitted = False
        self.score_names = [name]  # then one weight column per target, if kept ``separate``
        if params.target_mode == "separate" and len(params.target) > 1:
            self.score_names += [f"{name}.{Path(t.path).stem}" for t in params.target]

    def check(self) -> None:
        """Fail before any work if a target is missing (the driver calls this once)."""
        for spec in self.params.target:
            path = self.context.resolve(spec.path)
            if not path.exists():
                raise NotFoundError(f"DSIR target {str(path)!r} does not exist.", field="target")

    def _fit_target(self) -> None:
        """Count the targets' n-grams, once per process, when the model is first needed."""
        if self._target_fitted:
            return
        self.check()
        counts = []
        for spec in self.params.target:
            path = self.context.resolve(spec.path)
            counts.append(
                self.model.counts(
                    [r.content for r in b.records]
                    for b in read_records(
                        spec.model_copy(update={"path": str(path)}), strict=self.context.strict
                    )
                )
            )
            if counts[-1].sum() == 0:
                raise ConfigError(f"DSIR target {str(path)!r} has no text.", field="target")
        self.model.fit_target(counts)
        self._target_fitted = True

    def fit_stats(self, records: Sequence[Record]) -> np.ndarray:
        return self.model.featurize([r.content for r in records]).totals(self.params.buckets)

    def fit_from_stats(self, total: np.ndarray) -> None:
        self._fit_target()
        self.model.fit_raw(total)

    def score(self, records: Sequence[Record]) -> np.ndarray:
        weights = self.model.log_weights([r.content for r in records])
        if weights.shape[1] == 1:
            return weights[:, 0]
        return np.column_stack([weights.max(axis=1), weights])

    def requested_rows(self) -> int | None:
        return self.params.num

    def _wanted(self, alive: int) -> int:
        p = self.params
        return p.num if p.num is not None else round(alive * (p.fraction or 0))

    def rank_quotas(self, alive: int) -> list[int]:
        """Rows each weight column takes (one column unless targets are ``separate``)."""
        return self.model.quotas(min(self._wanted(alive), alive))

    def rank_keys(
        self, scores: dict[str, np.ndarray], column: int, start: int, alive: int, seed: int
    ) -> np.ndarray:
        names = self.score_names
        weights = scores[(names[1:] if len(names) > 1 else names)[column]]
        return self.model.resample_keys(weights, column, start, alive,
                                        method=self.params.method, seed=seed)  # fmt: skip

    def output_stats(self, records: Sequence[Record]) -> np.ndarray:
        return self.fit_stats(records)

    def report_metrics(self, total: np.ndarray) -> dict[str, float]:
        self._fit_target()
        return self.model.kl_report(total)
