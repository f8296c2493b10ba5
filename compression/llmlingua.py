"""LLMLingua (Jiang et al., 2023, "LLMLingua: Compressing Prompts for Accelerated Inference of
Large Language Models", arXiv:2310.05736): a budget controller over contexts, then iterative
token-level compression conditioned on the compressed prefix."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from thresher.compression.base import BaseCompressor, Doc, Selection
from thresher.compression.iterative import compress_iteratively
from thresher.compression.prompt import Prompt


class LLMLingua(BaseCompressor):
    """Budget controller + iterative token-level compression.

    With several contexts (demonstrations, documents), the budget controller ranks them by
    perplexity under the small LM (the more surprising, the more they tell the target model) and
    keeps whole contexts, best first, until they hold ``coarse_keep`` times the budget; the
    iterative step then compresses the survivors token by token to the exact budget. Instruction
    and question are kept verbatim and condition nothing but the target model.

    Args:
        coarse_keep: How much more than the budget the coarse step keeps (>= 1); the token step
            compresses the rest. Contexts of ``messages`` are never dropped whole.
        dynamic: Strength of the per-segment dynamic ratio (0 = every segment the same ratio).
        exact: Re-feed kept tokens rather than cut dropped ones out of the KV cache (about a
            third slower at 3x, scores exactly conditioned on the compressed prefix).
        **kwargs: See :class:`thresher.compression.base.BaseCompressor`.
    """

    name: ClassVar[str] = "llmlingua"
    self_information: ClassVar[bool] = True

    def __init__(
        self,
        scorer: Any,
        counter: Any,
        *,
        coarse_keep: float = 2.0,
        dynamic: float = 0.5,
        exact: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(scorer, counter, **kwargs)
        self.coarse_keep = coarse_keep
        self.dynamic = dynamic
        self.exact = exact

    def select(self, docs: list[Doc], budget: int, prompt: Prompt) -> Selection:
        self.tokenize(docs)
        keep = np.ones(len(docs), dtype=bool)
        note = None
        if len(docs) > 1 and prompt.messages is None:
            perplexity = self._perplexity(docs)
            keep[:] = False
            held = 0.0
            for k in np.argsort(-perplexity, kind="stable"):
                if held >= self.coarse_keep * budget:
                    break
                keep[k] = True
                held += float(docs[k].costs.sum())
            if not keep.all():
                note = f"budget controller kept {int(keep.sum())} of {len(docs)} contexts"
        forced_dropped = sum(
            float(d.costs[d.forced].sum()) for d, k in zip(docs, keep, strict=True) if not k
        )
        kept_cost = sum(float(d.costs.sum()) for d, k in zip(docs, keep, strict=True) if k)
        rate = min(1.0, max(0.0, budget - forced_dropped) / max(kept_cost, 1.0))
        masks, scores = compress_iteratively(
            self.scorer,
            docs,
            [rate if k else 0.0 for k in keep],
            segment_tokens=self.segment_tokens,
            dynamic=self.dynamic,
            exact=self.exact,
            separator=self.scorer.encode("\n\n"),
        )
        return Selection(masks, scores, note=note)

    def _perplexity(self, docs: list[Doc]) -> np.ndarray:
        """Mean self-information of each context, all contexts scored in batches."""
        logprobs = self.scorer.logprobs_ids([d.ids for d in docs])
        return np.array([-float(lp.mean()) if len(lp) else 0.0 for lp in logprobs])
