"""Per-token keep probabilities from a token-classification encoder (LLMLingua-2's model).

The wrapped model is any Hugging Face ``AutoModelForTokenClassification`` with two labels where
label 1 means *keep* and label 0 *drop* (the convention of microsoft's ``llmlingua-2-*``
checkpoints and of Thresher's own classifier). Long texts are cut into windows of the encoder's
length at sentence ends, and all windows of all texts run in length-sorted batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import InputError

# Token text that ends a sentence: a window is cut after the last one that fits.
_SENTENCE_END = frozenset({".", "!", "?", "。", "！", "？", ";", "\n"})


@dataclass(slots=True)
class TokenProbs:
    """Keep probabilities of one text's tokens, with each token's ``[start, end)`` characters."""

    offsets: list[tuple[int, int]]
    keep: np.ndarray


class TokenClassifier:
    """Wraps a loaded token classifier and its fast tokenizer; built by
    :meth:`core.models.ModelProvider.token_classifier`.

    Args:
        model: A ``...ForTokenClassification`` model with ``num_labels == 2`` (1 = keep).
        tokenizer: Its fast tokenizer (offsets are needed to map tokens back to words).
        name: What the model was loaded from.
        device: Where it runs.
        batch_size: Windows per forward pass.
        max_length: Tokens per window including the special tokens (the encoder's limit).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        device: str,
        batch_size: int = 16,
        max_length: int = 512,
    ) -> None:
        if batch_size <= 0:
            raise InputError(f"batch_size must be positive, got {batch_size}.", field="batch_size")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.batch_size = batch_size
        limit = int(getattr(model.config, "max_position_embeddings", max_length) or max_length)
        self.max_length = max(16, min(max_length, limit))

    def windows(self, ids: Sequence[int], offsets: Sequence[tuple[int, int]], text: str):
        """``[start, end)`` token ranges of at most ``max_length - 2`` tokens, cut after the last
        sentence end that fits (else after the last whole word)."""
        size = self.max_length - 2
        out = []
        start, n = 0, len(ids)
        while start < n:
            end = min(start + size, n)
            if end < n:
                cut = None
                for i in range(end - 1, start + size // 4, -1):
                    a, b = offsets[i]
                    if text[a:b] in _SENTENCE_END or "\n" in text[b : offsets[i + 1][0]]:
                        cut = i + 1
                        break
                if cut is None:  # no sentence end: cut where the next token starts a word
                    for i in range(end, start + 1, -1):
                        if offsets[i][0] > offsets[i - 1][1]:
                            cut = i
                            break
                end = cut or end
            out.append((start, end))
            start = end
        return out

    def keep_probs(self, texts: Sequence[str]) -> list[TokenProbs]:
        """P(keep) of every token of every text (special tokens excluded)."""
        import torch

        enc = self.tokenizer(
            list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        jobs: list[tuple[int, int, int]] = []  # (text, start, end)
        for t, (ids, offs) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
            jobs += [(t, a, b) for a, b in self.windows(ids, offs, texts[t])]
        probs = [np.zeros(len(ids), dtype=np.float32) for ids in enc["input_ids"]]
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        pad = self.tokenizer.pad_token_id or 0
        order = sorted(range(len(jobs)), key=lambda j: jobs[j][2] - jobs[j][1])
        with torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                batch = [jobs[j] for j in order[b : b + self.batch_size]]
                width = max(e - s for _, s, e in batch) + 2
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, (t, s, e) in enumerate(batch):
                    row = [cls, *enc["input_ids"][t][s:e], sep]
                    ids[r, : len(row)] = torch.tensor(row)
                    mask[r, : len(row)] = 1
                logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).logits
                p = torch.softmax(logits.float(), dim=-1)[..., 1].cpu().numpy()
                for r, (t, s, e) in enumerate(batch):
                    probs[t][s:e] = p[r, 1 : 1 + e - s]
        return [
            TokenProbs([tuple(o) for o in offs], p)
            for offs, p in zip(enc["offset_mapping"], probs, strict=True)
        ]
