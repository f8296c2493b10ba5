"""Per-token keep probabilities from a token-classification encoder (LLMLingua-2's model).

The wrapped model is any Hugging Face ``AutoModelForTokenClassification`` with two labels where
label 1 means *keep* and label 0 *drop* (the convention of microsoft's ``llmlingua-2-*``
checkpoints and of Thresher's own classifier). Long texts are cut into windows of the encoder's
length at sentence ends, and all windows of all texts run in length-sorted batches.

When the classifier and a sentence embedder share their lower encoder layers (Thresher's
classifier is all-MiniLM-L6-v2 with a retrained top layer), :meth:`TokenClassifier.keep_probs`
can also return every token's vector from the embedder's own top layers, run on the hidden states
of the same pass: one forward pass serves both the keep probabilities and the sentence ranking.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from thresher.core.errors import InputError
from thresher.core.text import ends_sentence


@dataclass(slots=True)
class TokenProbs:
    """Keep probabilities of one text's tokens, with each token's ``[start, end)`` characters."""

    offsets: list[tuple[int, int]]
    keep: np.ndarray
    vectors: np.ndarray | None = None
    """Each token's vector from a sharing embedder's top layers (float32, tokens x dim), when
    asked for."""


class _Tail:
    """The layers of an embedder above those it shares with the classifier, and the hook that
    runs them on the classifier's hidden states in the threads that ask for it."""

    def __init__(self, layers: list[Any]) -> None:
        self.layers = layers
        self.local = threading.local()

    def __deepcopy__(self, memo: dict) -> _Tail:
        # A copied model carries the hook; its copy stays inactive (no classifier asks for it).
        return _Tail([])

    def hook(self, _module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if not getattr(self.local, "active", False):
            return
        hidden = output[0] if isinstance(output, tuple) else output
        for layer in self.layers:
            out = layer(hidden, *args[1:], **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        self.local.hidden = hidden


class TokenClassifier:
    """Wraps a loaded token classifier and its fast tokenizer; built by
    :meth:`thresher.core.models.ModelProvider.token_classifier`.

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
        self._tails: weakref.WeakKeyDictionary[Any, _Tail | None] = weakref.WeakKeyDictionary()
        self._tails_lock = threading.Lock()

    def shares_encoder(self, embedder: Any) -> bool:
        """Whether ``embedder`` (a :class:`thresher.core.embedding.Embedder`) runs on this
        classifier's tokens and lower layers, so that :meth:`keep_probs` can give its token
        vectors."""
        return self._tail(embedder) is not None

    def _tail(self, embedder: Any) -> _Tail | None:
        with self._tails_lock:
            if embedder not in self._tails:
                self._tails[embedder] = self._find_tail(embedder)
            return self._tails[embedder]

    def _find_tail(self, embedder: Any) -> _Tail | None:
        """Compare the two encoders parameter by parameter (once per embedder); hook the last
        shared layer. None unless the embedder mean-pools one transformer with this tokenizer,
        on the same device and dtype."""
        import torch

        st = getattr(embedder, "model", None)
        try:
            modules = list(st)
            base = modules[0].auto_model
            pooling = modules[1]
        except (TypeError, IndexError, AttributeError):
            return None
        kinds = [type(m).__name__ for m in modules]
        if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
            return None
        if getattr(pooling, "pooling_mode", None) not in (None, "mean") or not getattr(
            pooling, "pooling_mode_mean_tokens", True
        ):
            return None
        mine = getattr(self.model, "base_model", None)
        theirs_tok = getattr(st, "tokenizer", None)
        if mine is None or type(mine) is not type(base) or theirs_tok is None:
            return None
        if theirs_tok.get_vocab() != self.tokenizer.get_vocab():
            return None

        def same(a: Any, b: Any) -> bool:
            pa, pb = list(a.parameters()), list(b.parameters())
            return len(pa) == len(pb) and all(
                x.shape == y.shape and x.dtype == y.dtype and x.device == y.device
                and torch.equal(x, y)
                for x, y in zip(pa, pb, strict=True)
            )  # fmt: skip

        try:
            layers, their_layers = mine.encoder.layer, base.encoder.layer
        except AttributeError:
            return None
        if len(layers) != len(their_layers) or not same(mine.embeddings, base.embeddings):
            return None
        shared = 0
        while shared < len(layers) and same(layers[shared], their_layers[shared]):
            shared += 1
        if shared == 0:
            return None
        tail = _Tail(list(their_layers[shared:]))
        layers[shared - 1].register_forward_hook(tail.hook, with_kwargs=True)
        return tail

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
                    if ends_sentence(text[a:b]) or "\n" in text[b : offsets[i + 1][0]]:
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

    def keep_probs(self, texts: Sequence[str], *, embedder: Any = None) -> list[TokenProbs]:
        """P(keep) of every token of every text (special tokens excluded); with an ``embedder``
        that :meth:`shares_encoder`, also each token's vector from the embedder's top layers
        (``TokenProbs.vectors``, mean-poolable into sentence embeddings)."""
        tail = self._tail(embedder) if embedder is not None else None
        enc, batches = self._plan(texts)
        probs = [np.zeros(len(ids), dtype=np.float32) for ids in enc["input_ids"]]
        vectors = None
        if tail is not None:
            dim = int(self.model.config.hidden_size)
            vectors = [np.zeros((len(ids), dim), dtype=np.float32) for ids in enc["input_ids"]]
            tail.local.active = True
        try:
            self._run(enc, batches, probs, vectors, tail)
        finally:
            if tail is not None:
                tail.local.active = False
                tail.local.hidden = None
        return [
            TokenProbs([tuple(o) for o in offs], p, None if vectors is None else vectors[t])
            for t, (offs, p) in enumerate(zip(enc["offset_mapping"], probs, strict=True))
        ]

    def batches(self, texts: Sequence[str]) -> list[tuple[Any, Any]]:
        """The ``(input_ids, attention_mask)`` tensors :meth:`keep_probs` runs the model on, in
        its order: what a benchmark times to get the forward pass alone."""
        enc, batches = self._plan(texts)
        return [self._padded(enc, batch) for batch in batches]

    def _plan(self, texts: Sequence[str]) -> tuple[Any, list[list[tuple[int, int, int]]]]:
        """Tokenise ``texts`` and cut them into windows, batched in length order: the
        encoding and each batch's ``(text, start, end)`` windows."""
        enc = self.tokenizer(
            list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        jobs: list[tuple[int, int, int]] = []  # (text, start, end)
        for t, (ids, offs) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
            jobs += [(t, a, b) for a, b in self.windows(ids, offs, texts[t])]
        jobs.sort(key=lambda job: job[2] - job[1])
        return enc, [jobs[b : b + self.batch_size] for b in range(0, len(jobs), self.batch_size)]

    def _padded(self, enc: Any, batch: list[tuple[int, int, int]]) -> tuple[Any, Any]:
        """One batch of windows as right-padded ids with [CLS] and [SEP], and its mask."""
        import torch

        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        pad = self.tokenizer.pad_token_id or 0
        width = max(e - s for _, s, e in batch) + 2
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (t, s, e) in enumerate(batch):
            row = [cls, *enc["input_ids"][t][s:e], sep]
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _run(
        self,
        enc: Any,
        batches: list[list[tuple[int, int, int]]],
        probs: list[np.ndarray],
        vectors: list[np.ndarray] | None,
        tail: _Tail | None,
    ) -> None:
        """The forward passes of :meth:`keep_probs`, filling ``probs`` (and ``vectors``) in
        place."""
        import torch

        with torch.inference_mode():
            for batch in batches:
                ids, mask = self._padded(enc, batch)
                logits = self.model(input_ids=ids, attention_mask=mask).logits
                p = torch.softmax(logits.float(), dim=-1)[..., 1].cpu().numpy()
                h = None
                if tail is not None:
                    h = tail.local.hidden.float().cpu().numpy()
                for r, (t, s, e) in enumerate(batch):
                    probs[t][s:e] = p[r, 1 : 1 + e - s]
                    if h is not None:
                        vectors[t][s:e] = h[r, 1 : 1 + e - s]
