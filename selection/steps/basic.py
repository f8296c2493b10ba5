"""General-purpose steps: a length scorer, a threshold filter on any score, top-k on a score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from thresher.core.record import Record
from thresher.core.steps import Filter, Scorer
from thresher.selection.registry import (
    RankSelector,
    RowRequester,
    ScoreReader,
    StepContext,
    StepParams,
    register_step,
)


class LengthParams(StepParams):
    unit: Literal["chars", "words"] = "words"


@register_step("length", params=LengthParams, example={"unit": "chars"})
class LengthScorer(Scorer):
    """Scores a record by its length in characters or whitespace-separated words."""

    def __init__(self, name: str, params: LengthParams, context: StepContext) -> None:
        self.name = name
        self.unit = params.unit

    def score(self, records: Sequence[Record]) -> np.ndarray:
        if self.unit == "chars":
            return np.array([len(r.content) for r in records], dtype=np.float64)
        return np.array([len(r.content.split()) for r in records], dtype=np.float64)


class ThresholdParams(StepParams):
    score: str = Field(description="Name of the score to threshold (a step name).")
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdParams:
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' ({self.min}) is above 'max' ({self.max})")
        return self


@register_step("threshold", params=ThresholdParams, example={"score": "_len", "min": 20})
class ThresholdFilter(Filter, ScoreReader):
    """Keeps records whose score lies in [min, max]; the reason says which bound failed."""

    def __init__(self, name: str, params: ThresholdParams, context: StepContext) -> None:
        self.name = name
        self.score_name = params.score
        self.low = params.min
        self.high = params.max

    def reads_score(self) -> str:
        return self.score_name

    def keep(self, records: Sequence[Record]) -> tuple[np.ndarray, list[str | None]]:
        mask = np.ones(len(records), dtype=bool)
        reasons: list[str | None] = [None] * len(records)
        for i, record in enumerate(records):
            value = record.scores.get(self.score_name)
            if value is None or np.isnan(value):
                mask[i], reasons[i] = False, f"no {self.score_name} score"
            elif self.low is not None and value < self.low:
                mask[i], reasons[i] = False, f"{self.score_name} < {self.low:g}"
            elif self.high is not None and value > self.high:
                mask[i], reasons[i] = False, f"{self.score_name} > {self.high:g}"
        return mask, reasons


class TopKParams(StepParams):
    score: str
    k: int | None = Field(None, gt=0)
    fraction: float | None = Field(None, gt=0, le=1)
    largest: bool = True

    @model_validator(mode="after")
    def _one(self) -> TopKParams:
        if (self.k is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'k' and 'fraction'")
        return self


@register_step("top_k", params=TopKParams, example={"score": "_len", "fraction": 0.3})
class TopK(RankSelector, ScoreReader, RowRequester):
    """Keeps the k (or a fraction) best records by one score; ties go to the earlier row."""

    def __init__(self, name: str, params: TopKParams, context: StepContext) -> None:
        self.name = name
        self.params = params

    def reads_score(self) -> str:
        return self.params.score

    def requested_rows(self) -> int | None:
        return self.params.k

    def rank_quotas(self, alive: int) -> list[int]:
        p = self.params
        return [min(p.k if p.k is not None else round(alive * (p.fraction or 0)), alive)]

    def rank_keys(
        self, scores: dict[str, np.ndarray], column: int, start: int, alive: int, seed: int
    ) -> np.ndarray:
        values = np.asarray(scores[self.params.score], dtype=np.float64)
        return np.nan_to_num(values if self.params.largest else -values, nan=-np.inf)
