"""An LLM judge that rates each response on a rubric, in the style of AlpaGasus.

Chen et al., 2024 ("AlpaGasus: Training a Better Alpaca with Fewer Data") ask a strong LLM to
rate every (instruction, input, response) on a 0-5 scale and keep the high-rated rows. Any
OpenAI-compatible backend or the local one serves the ratings; many requests are in flight at
once (asyncio with a semaphore), failures are retried with exponential backoff, and a rating
that still fails or cannot be parsed is recorded as missing (NaN) with its reason: never a
default score.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from thresher.core.backends import ChatBackend
from thresher.core.errors import (
    BackendError,
    BackendResponseError,
    BackendUnavailableError,
    InputError,
)
from thresher.core.record import Record
from thresher.selection.quality.turns import Turn, turns

RUBRIC = (
    "We would like to request your feedback on the performance of an AI assistant in response "
    "to the instruction and the given input displayed below.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{response}\n\n"
    "Please rate according to the accuracy of the response to the instruction and the input. "
    "The assistant receives a score on a scale of 0 to 5, where a higher score indicates a "
    "higher level of accuracy. Reply with the score first, as 'Score: X', then one sentence "
    "of explanation."
)
SCORE = re.compile(r"(?:score\s*[:=]?\s*)?\b([0-5](?:\.\d+)?)\s*(?:/\s*5)?\b", re.IGNORECASE)


@dataclass(slots=True)
class Rating:
    """One turn's rating, or why there is none."""

    score: float  # NaN when missing
    reason: str | None = None


def parse_rating(text: str) -> float | None:
    """The 0-5 score in a judge's reply ("Score: 4", "4/5", "4.5"), or None."""
    labelled = re.search(r"score\s*[:=]?\s*([0-5](?:\.\d+)?)", text, re.IGNORECASE)
    match = labelled or SCORE.search(text)
    if match is None:
        return None
    value = float(match.group(1))
    return value if 0 <= value <= 5 else None


@dataclass
class LLMJudge:
    """Rates every assistant turn; a record's score is the mean of its turns' ratings.

    Args:
        backend: a :class:`thresher.core.backends.ChatBackend` (OpenAI-compatible or local), or a
            function that makes one: then each event loop (each ``score`` call) gets its own,
            closed afterwards, since an HTTP client's pool cannot outlive its loop.
        model: the model name sent with each request.
        concurrency: requests in flight at once.
        retries: attempts after the first one, for errors that may pass (unreachable, 429, 5xx).
        backoff: seconds before the first retry; doubled each time.
        max_tokens: length of the judge's reply.
        name: the score's name.
    """

    backend: ChatBackend | Callable[[], ChatBackend]
    model: str = "judge"
    concurrency: int = 8
    retries: int = 3
    backoff: float = 0.5
    max_tokens: int = 48
    name: str = "judge"
    reasons_: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.concurrency <= 0:
            raise InputError(
                f"concurrency must be positive, got {self.concurrency}.", field="concurrency"
            )
        if self.retries < 0:
            raise InputError(f"retries must be >= 0, got {self.retries}.", field="retries")

    @asynccontextmanager
    async def _connected(self) -> AsyncIterator[ChatBackend]:
        if isinstance(self.backend, ChatBackend):
            yield self.backend
            return
        backend = self.backend()
        try:
            yield backend
        finally:
            await backend.aclose()

    async def check(self) -> None:
        """Fail fast with a clear message when the backend cannot be reached."""
        async with self._connected() as backend:
            try:
                await backend.models()
            except BackendError as exc:
                raise BackendUnavailableError(
                    f"The judge backend {backend.name} does not answer ({exc}); start it, fix "
                    "--judge-backend, or pass --judge-optional to record ratings as missing."
                ) from exc

    def score(self, records: Sequence[Record]) -> np.ndarray:
        """Mean rating per record (NaN where any turn's rating is missing; see ``reasons_``)."""
        return asyncio.run(self.ascore(records))

    async def ascore(self, records: Sequence[Record]) -> np.ndarray:
        gate = asyncio.Semaphore(self.concurrency)
        jobs = [(i, t) for i, r in enumerate(records) for t in turns(r)]
        async with self._connected() as backend:
            ratings = await asyncio.gather(*(self._rate(backend, t, gate) for _, t in jobs))
        per_record: list[list[Rating]] = [[] for _ in records]
        for (i, _), rating in zip(jobs, ratings, strict=True):
            per_record[i].append(rating)
        out = np.full(len(records), np.nan)
        for i, (record, found) in enumerate(zip(records, per_record, strict=True)):
            missing = [r.reason for r in found if math.isnan(r.score)]
            if not found:
                self.reasons_[record.id] = "no response to rate"
            elif missing:
                self.reasons_[record.id] = str(missing[0])
            else:
                out[i] = float(np.mean([r.score for r in found]))
        return out

    async def _rate(self, backend: ChatBackend, turn: Turn, gate: asyncio.Semaphore) -> Rating:
        if not turn.response.strip():
            return Rating(math.nan, "empty response: nothing to rate")
        prompt = RUBRIC.format(
            instruction=turn.instruction, input=turn.input or "(none)", response=turn.response
        )
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                async with gate:
                    reply = await backend.chat(body)
                text = str(reply["choices"][0]["message"].get("content") or "")
            except (BackendUnavailableError, BackendResponseError) as exc:
                retryable = not isinstance(exc, BackendResponseError) or exc.status_code in (
                    408, 429, 500, 502, 503, 504
                )  # fmt: skip
                if not retryable or attempt == self.retries:
                    return Rating(math.nan, f"judge failed: {exc}")
                await asyncio.sleep(delay)
                delay *= 2
                continue
            except BackendError as exc:
                return Rating(math.nan, f"judge failed: {exc}")
            except (KeyError, IndexError, TypeError) as exc:
                return Rating(math.nan, f"judge reply has no message ({type(exc).__name__})")
            value = parse_rating(text)
            if value is None:
                return Rating(math.nan, f"unparseable rating: {text[:60]!r}")
            return Rating(value)
        return Rating(math.nan, "judge failed")
