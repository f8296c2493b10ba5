"""Per-token log-probabilities from a small causal LM, batched and windowed.

Self-information ``-log p(x_i | x_<i)`` is the signal behind LLMLingua-style compression,
perplexity and IFD scores, and label scoring for in-context learning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from thresher.core.errors import InputError


@dataclass(slots=True)
class TokenLogprobs:
    """Token ids of a text and the log-prob of each given everything before it."""

    ids: np.ndarray  # int64, shape (n,)
    logprobs: np.ndarray  # float32, shape (n,)


class TokenScorer:
    """Wraps a loaded causal LM and its tokenizer; built by
    :class:`thresher.core.models.ModelProvider`.

    Sequences are sorted by length and batched under a token budget; each batch runs through
    the model in windows of ``window`` tokens with the KV cache carried forward, so logits never
    exist for more than one window at a time. Sequences longer than ``max_context`` are scored
    in overlapping spans, each later span seeing ``overlap`` tokens of left context.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        device: str,
        batch_size: int = 8,
        window: int = 512,
        max_context: int = 4096,
        overlap: int = 512,
    ) -> None:
        if batch_size <= 0:
            raise InputError(f"batch_size must be positive, got {batch_size}.", field="batch_size")
        if not 0 < overlap < max_context:
            raise InputError(
                f"overlap must be in (0, max_context={max_context}), got {overlap}.",
                field="overlap",
            )
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self.window = window
        self.max_context = max_context
        self.overlap = overlap
        vocab = tokenizer.get_vocab()
        start = vocab.get("<|endoftext|>", tokenizer.bos_token_id)
        self.start_id: int = int(start if start is not None else tokenizer.eos_token_id)
        self.pad_id: int = int(tokenizer.pad_token_id or tokenizer.eos_token_id or 0)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of ``text`` and the ``(start, end)`` characters each covers.

        Byte-level pieces of one character (a CJK ideograph, an emoji) share that character's
        offsets, so callers can group tokens by character without ever splitting one.
        """
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [(int(a), int(b)) for a, b in enc["offset_mapping"]]

    def stream(self, prefix: Sequence[int] = (), *, exact: bool = False) -> ScoringStream:
        """A :class:`ScoringStream` that starts after the document start token and ``prefix``."""
        return ScoringStream(self, prefix, exact=exact)

    def token_logprobs(
        self, texts: Sequence[str], *, batch_size: int | None = None
    ) -> list[TokenLogprobs]:
        """Log-prob of every token of each text, the first one given a document start token."""
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text:
                raise InputError(f"texts[{i}] is empty; give non-empty text.", field=f"texts[{i}]")
        ids = [self.encode(t) for t in texts]
        scores = self.logprobs_ids(ids, batch_size=batch_size)
        return [
            TokenLogprobs(np.asarray(i, dtype=np.int64), s)
            for i, s in zip(ids, scores, strict=True)
        ]

    def continuation_logprobs(
        self,
        prefixes: Sequence[str],
        continuations: Sequence[str],
        *,
        batch_size: int | None = None,
    ) -> list[np.ndarray]:
        """Log-probs of each continuation's tokens given its prefix (prefix may be empty)."""
        if len(prefixes) != len(continuations):
            raise InputError(
                f"{len(prefixes)} prefixes but {len(continuations)} continuations; give one each.",
                field="continuations",
            )
        seqs, starts = [], []
        for i, (p, c) in enumerate(zip(prefixes, continuations, strict=True)):
            if not c:
                raise InputError(f"continuations[{i}] is empty.", field=f"continuations[{i}]")
            p_ids = self.encode(p) if p else []
            seqs.append(p_ids + self.encode(c))
            starts.append(len(p_ids))
        scores = self.logprobs_ids(seqs, batch_size=batch_size)
        return [s[k:] for s, k in zip(scores, starts, strict=True)]

    def logprobs_ids(
        self, sequences: Sequence[Sequence[int]], *, batch_size: int | None = None
    ) -> list[np.ndarray]:
        """Log-prob of every id of each sequence given its prefix; batched by length."""
        bs = self.batch_size if batch_size is None else batch_size
        if bs <= 0:
            raise InputError(f"batch_size must be positive, got {bs}.", field="batch_size")
        out: list[np.ndarray | None] = [None] * len(sequences)
        short = []
        for i, seq in enumerate(sequences):
            if len(seq) == 0:
                out[i] = np.zeros(0, dtype=np.float32)
            elif len(seq) + 1 > self.max_context:
                out[i] = self._long(list(seq))
            else:
                short.append(i)
        short.sort(key=lambda i: len(sequences[i]))
        budget = bs * self.window  # tokens per batch
        batch: list[int] = []
        for i in short:
            longest = len(sequences[i]) + 1
            if batch and (len(batch) + 1) * longest > max(budget, longest) or len(batch) >= bs:
                self._run_batch([list(sequences[j]) for j in batch], batch, out)
                batch = []
            batch.append(i)
        if batch:
            self._run_batch([list(sequences[j]) for j in batch], batch, out)
        return [o if o is not None else np.zeros(0, dtype=np.float32) for o in out]

    def _run_batch(self, seqs: list[list[int]], where: list[int], out: list[Any]) -> None:
        rows = [[self.start_id, *s] for s in seqs]
        scores = self._forward(rows)
        for k, i in enumerate(where):
            out[i] = scores[k][: len(seqs[k])]

    def _long(self, seq: list[int]) -> np.ndarray:
        """Score a sequence longer than max_context in overlapping spans."""
        result = np.empty(len(seq), dtype=np.float32)
        first = self.max_context - 1
        result[:first] = self._forward([[self.start_id, *seq[:first]]])[0]
        pos = first
        step = self.max_context - self.overlap
        while pos < len(seq):
            end = min(pos + step, len(seq))
            rows = [seq[pos - self.overlap : end]]
            span = self._forward(rows)[0]  # log-probs of rows[0][1:]
            result[pos:end] = span[self.overlap - 1 :]
            pos = end
        return result

    def _forward(self, rows: list[list[int]]) -> list[np.ndarray]:
        """Log-probs of rows[b][1:] given their prefixes. Rows are right-padded: under causal
        attention a real token never sees the padding after it, so no mask is needed."""
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        ids = ids.to(self.device)
        result = torch.empty((len(rows), width - 1), dtype=torch.float32)
        past = None
        with torch.inference_mode():
            for start in range(0, width - 1, self.window):
                stop = min(start + self.window, width - 1)
                chunk = ids[:, start:stop]
                outputs = self.model(input_ids=chunk, past_key_values=past, use_cache=True)
                past = outputs.past_key_values
                logp = torch.log_softmax(outputs.logits.float(), dim=-1)
                target = ids[:, start + 1 : stop + 1].unsqueeze(-1)
                result[:, start:stop] = logp.gather(-1, target).squeeze(-1).cpu()
        return [result[b, : len(r) - 1].numpy().copy() for b, r in enumerate(rows)]


class ScoringStream:
    """Scores a sequence segment by segment, carrying the KV cache of the kept text forward.

    Iterative prompt compression scores each segment given the *compressed* text before it:
    :meth:`score` returns the log-probs of a new segment given everything kept so far, and
    :meth:`keep` says which of its tokens stay. With ``exact=False`` (LLMLingua's own approach)
    the cache entries of dropped tokens are cut out, so every token is fed once; the kept
    tokens' entries still carry what they saw of the dropped ones. With ``exact=True`` the
    kept tokens are fed again on their own, about a third more work at 3x compression. When
    the kept text outgrows ``max_context``, the cache restarts from its last ``overlap`` tokens.
    """

    def __init__(self, scorer: TokenScorer, prefix: Sequence[int] = (), *, exact: bool = False):
        self.scorer = scorer
        self.exact = exact
        self.tokens_fed = 0
        self._history: list[int] = []
        self._cache: Any = None
        self._next: Any = None  # log-probs of the token after the kept text
        self._pending: list[int] = []  # ids of the last scored segment, awaiting keep()
        # Position of the next token. Pruning leaves the kept entries at their original
        # positions, so new tokens continue from there, not from the shorter cache length.
        self._position = 0
        self._feed([scorer.start_id, *prefix])

    def _feed(self, ids: list[int]) -> Any:
        """Run ``ids`` through the model after the cache; returns their log-probs (n, vocab)."""
        import torch

        s = self.scorer
        rows = []
        with torch.inference_mode():
            for start in range(0, len(ids), s.window):
                x = torch.tensor([ids[start : start + s.window]], device=s.device)
                where = torch.arange(self._position, self._position + x.shape[1], device=s.device)
                self._position += x.shape[1]
                out = s.model(
                    input_ids=x,
                    position_ids=where.unsqueeze(0),
                    past_key_values=self._cache,
                    use_cache=True,
                )
                self._cache = out.past_key_values
                rows.append(torch.log_softmax(out.logits[0].float(), dim=-1))
        self.tokens_fed += len(ids)
        self._history.extend(ids)
        logp = torch.cat(rows)
        self._next = logp[-1]
        return logp

    def score(self, ids: Sequence[int]) -> np.ndarray:
        """Log-prob of each of ``ids`` given the kept text; call :meth:`keep` before the next."""
        import torch

        ids = list(ids)
        if self._pending:
            raise RuntimeError("call keep() for the last scored segment before scoring another")
        if not ids:
            return np.zeros(0, dtype=np.float32)
        s = self.scorer
        if self._cache.get_seq_length() + len(ids) > s.max_context:
            keep = self._history[-max(1, min(s.overlap, s.max_context - len(ids) - 1)) :]
            self._cache, self._history, self._position = None, [], 0
            self._feed(keep)
        first = self._next
        logp = self._feed(ids)
        self._history = self._history[: len(self._history) - len(ids)]
        targets = torch.tensor(ids, device=logp.device)
        out = torch.empty(len(ids), dtype=torch.float32)
        out[0] = first[targets[0]]
        if len(ids) > 1:
            out[1:] = logp[:-1].gather(-1, targets[1:].unsqueeze(-1)).squeeze(-1).cpu()
        self._pending = ids
        return out.numpy()

    def keep(self, mask: Sequence[bool]) -> None:
        """Keep the tokens of the last scored segment where ``mask`` is true."""
        import torch

        ids, self._pending = self._pending, []
        kept = [t for t, k in zip(ids, mask, strict=True) if k]
        if self.exact:
            self._cache.crop(-len(ids))
            self._position -= len(ids)
            if kept:
                self._feed(kept)
            else:
                self._history_next()
            return
        self._history.extend(kept)
        if len(kept) == len(ids):
            return
        total = self._cache.get_seq_length()
        index = torch.tensor(
            list(range(total - len(ids))) + [total - len(ids) + i for i, k in enumerate(mask) if k],
            device=self.scorer.device,
        )
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(-2, index)
            layer.values = layer.values.index_select(-2, index)

    def _history_next(self) -> None:
        """After cropping a scored segment, recover the log-probs of the token after the kept
        text by feeding its last token again."""
        last = self._history.pop()
        self._cache.crop(-1)
        self._position -= 1
        self._feed([last])

    def commit(self, ids: Sequence[int]) -> None:
        """Append ``ids`` (a separator, say) to the kept text."""
        if self._pending:
            raise RuntimeError("call keep() for the last scored segment first")
        if ids:
            self._feed(list(ids))
