"""Perplexity and instruction-following difficulty (IFD) of each response under a small LM.

Li et al., 2024 ("From Quantity to Quality: Boosting LLM Performance with Self-Guided Data
Selection"): IFD = PPL(response | instruction) / PPL(response). Near or above 1, the instruction
does not help predict the answer (misaligned or unrelated pairs); Superfiltering (Li et al., 2024)
shows a small model ranks IFD as well as a large one. Responses are scored per assistant turn,
batched by length through :class:`thresher.core.scoring.TokenScorer` (which sorts sequences by
length and fills batches under a token budget), and averaged per record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from thresher.core.errors import InputError
from thresher.core.record import Record
from thresher.core.scoring import TokenScorer
from thresher.selection.quality.turns import turns


@dataclass(slots=True)
class TurnPerplexity:
    """Log-perplexities of one response, with and without its request."""

    conditional: float  # mean negative log-prob of the response given the request
    unconditional: float  # the same with no request

    @property
    def ifd(self) -> float:
        return float(np.exp(self.conditional - self.unconditional))


@dataclass
class PerplexityScorer:
    """Writes ``<name>`` (PPL of the response given its request), ``<name>.alone`` (PPL of the
    response by itself) and ``<name>.ifd`` for each record; NaN where it has no response.

    Args:
        scorer: the token scorer (SmolLM2-135M by default from the provider).
        max_prompt_tokens: the request is cut to its last this-many tokens.
        max_response_tokens: the response is cut to its first this-many tokens; a long answer's
            opening says enough about how it follows the request, and costs stay bounded.
        name: prefix of the score names.
    """

    scorer: TokenScorer
    max_prompt_tokens: int = 384
    max_response_tokens: int = 128
    name: str = "perplexity"
    score_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.max_prompt_tokens < 0 or self.max_response_tokens <= 0:
            raise InputError(
                "max_prompt_tokens must be >= 0 and max_response_tokens > 0.",
                field="max_response_tokens",
            )
        self.score_names = [self.name, f"{self.name}.alone", f"{self.name}.ifd"]

    def turn_perplexities(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> list[TurnPerplexity]:
        """Both log-perplexities for each (prompt, non-empty response), in one batched pass."""
        prompt_ids = [
            self.scorer.encode(p)[-self.max_prompt_tokens :] if p else [] for p in prompts
        ]
        response_ids = [self.scorer.encode(r)[: self.max_response_tokens] for r in responses]
        for i, ids in enumerate(response_ids):
            if not ids:
                raise InputError(f"responses[{i}] is empty.", field=f"responses[{i}]")
        joint = [p + r for p, r in zip(prompt_ids, response_ids, strict=True)]
        scores = self.scorer.logprobs_ids(joint + response_ids)
        n = len(joint)
        out = []
        for i, ids in enumerate(response_ids):
            conditional = -float(scores[i][-len(ids) :].mean())
            unconditional = -float(scores[n + i].mean())
            out.append(TurnPerplexity(conditional, unconditional))
        return out

    def score(self, records: Sequence[Record]) -> np.ndarray:
        """Shape (len(records), 3): PPL given the request, PPL alone, IFD (turn means)."""
        owners, prompts, responses = [], [], []
        for i, record in enumerate(records):
            for turn in turns(record):
                if turn.response.strip():
                    owners.append(i)
                    prompts.append(turn.prompt)
                    responses.append(turn.response)
        out = np.full((len(records), 3), np.nan)
        if not responses:
            return out
        found = self.turn_perplexities(prompts, responses)
        per: dict[int, list[TurnPerplexity]] = {}
        for i, tp in zip(owners, found, strict=True):
            per.setdefault(i, []).append(tp)
        for i, items in per.items():
            cond = float(np.mean([t.conditional for t in items]))
            alone = float(np.mean([t.unconditional for t in items]))
            out[i] = (np.exp(cond), np.exp(alone), float(np.mean([t.ifd for t in items])))
        return out
