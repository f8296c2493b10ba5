"""Language-likeness from a character n-gram model fitted on the requests of the same data.

Interpolated absolute discounting (Ney, Essen & Kneser, 1994, "On structuring probabilistic
dependences in stochastic language modelling"), counted with numpy over integer-coded n-grams.
A response whose characters cost more bits than the model's own unigram entropy (letters drawn
independently at their frequencies) carries no structure of the language it answers in: random
keyboard noise, mojibake, or pseudo-words. This is a cheap stand-in for a causal LM's perplexity
(see :mod:`selection.quality.perplexity`) that runs over millions of rows on a CPU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InputError, NotFoundError
from core.record import Record
from selection.quality.turns import turns

UNKNOWN = 0  # id of every character seen too rarely in training


@dataclass
class CharNgramLM:
    """A character n-gram model with interpolated absolute discounting.

    Args:
        order: longest n-gram (4 sees most English syllables).
        discount: absolute discount subtracted from every seen count.
        min_char_count: characters seen fewer times than this share the unknown id.
    """

    order: int = 4
    discount: float = 0.75
    min_char_count: int = 5
    vocab_: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    tables_: list[dict[str, np.ndarray]] = field(default_factory=list, init=False, repr=False)
    unigram_entropy_: float = field(default=float("nan"), init=False)

    def fit(self, texts: Sequence[str]) -> CharNgramLM:
        """Count n-grams of ``texts`` (non-empty ones) and derive the back-off weights."""
        if self.order < 1:
            raise InputError(f"order must be at least 1, got {self.order}.", field="order")
        texts = [t for t in texts if t and t.strip()]
        if not texts:
            raise InputError("CharNgramLM.fit needs at least one non-empty text.", field="texts")
        chars, counts = np.unique(np.array(list("".join(texts))), return_counts=True)
        kept = [
            c
            for c, n in zip(chars.tolist(), counts.tolist(), strict=True)
            if n >= self.min_char_count
        ]
        self.vocab_ = {c: i + 1 for i, c in enumerate(kept)}
        self.tables_ = []
        ids = [self._ids(t) for t in texts]
        for n in range(1, self.order + 1):
            codes = np.concatenate([self._codes(x, n) for x in ids])
            grams, gram_counts = np.unique(codes, return_counts=True)
            base = self._base()
            contexts = grams // base
            ctx, ctx_first = np.unique(contexts, return_index=True)
            ctx_total = np.add.reduceat(gram_counts, ctx_first) if len(grams) else gram_counts
            ctx_types = np.diff(np.append(ctx_first, len(grams)))
            self.tables_.append(
                {
                    "grams": grams,
                    "counts": gram_counts.astype(np.float64),
                    "contexts": ctx,
                    "context_total": ctx_total.astype(np.float64),
                    "context_types": ctx_types.astype(np.float64),
                }
            )
        p = self.tables_[0]["counts"] / self.tables_[0]["counts"].sum()
        self.unigram_entropy_ = float(-(p * np.log2(p)).sum())
        return self

    def bits_per_char(self, texts: Sequence[str]) -> np.ndarray:
        """Cross-entropy of each text in bits per character (NaN for an empty text)."""
        self._check_fitted()
        out = np.full(len(texts), np.nan)
        for i, text in enumerate(texts):
            if text:
                x = self._ids(text)
                out[i] = -np.log2(self._probs(x)).mean()
        return out

    def _probs(self, x: np.ndarray) -> np.ndarray:
        """P(x_i | up to order-1 previous characters), interpolated down to a uniform floor.

        The first characters of a text have shorter histories; no n-gram spans the start, so a
        text is not charged for how other texts happened to begin.
        """
        prob = np.full(len(x), 1.0 / self._base())
        for n in range(1, min(self.order, len(x)) + 1):
            table = self.tables_[n - 1]
            codes = self._codes(x, n)
            count = _lookup(table["grams"], table["counts"], codes)
            ctx = codes // self._base()
            total = _lookup(table["contexts"], table["context_total"], ctx)
            types = _lookup(table["contexts"], table["context_types"], ctx)
            seen = total > 0
            safe = np.where(seen, total, 1.0)
            backoff = np.where(seen, self.discount * types / safe, 1.0)
            own = np.where(seen, np.maximum(count - self.discount, 0.0) / safe, 0.0)
            prob[n - 1 :] = own + backoff * prob[n - 1 :]
        return np.clip(prob, 1e-12, 1.0)

    def score(self, records: Sequence[Record]) -> np.ndarray:
        """Worst (highest) bits per character over the responses of each record."""
        out = np.full(len(records), np.nan)
        for i, record in enumerate(records):
            values = self.bits_per_char([t.response.strip() for t in turns(record)])
            if np.isfinite(values).any():
                out[i] = np.nanmax(values)
        return out

    def save(self, folder: str | Path) -> None:
        """Write the count tables (``tables.npz``) and ``config.json``; no pickle."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"{k}_{n}": v for n, t in enumerate(self.tables_) for k, v in t.items()}
        np.savez(folder / "tables.npz", **arrays)
        config = {
            "order": self.order,
            "discount": self.discount,
            "min_char_count": self.min_char_count,
            "vocab": self.vocab_,
            "unigram_entropy": self.unigram_entropy_,
        }
        (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False))

    @classmethod
    def load(cls, folder: str | Path) -> CharNgramLM:
        folder = Path(folder)
        if not (folder / "config.json").exists():
            raise NotFoundError(f"No character model in {folder} (config.json is missing).")
        config = json.loads((folder / "config.json").read_text())
        model = cls(config["order"], config["discount"], config["min_char_count"])
        model.vocab_ = {k: int(v) for k, v in config["vocab"].items()}
        model.unigram_entropy_ = float(config["unigram_entropy"])
        with np.load(folder / "tables.npz") as data:
            model.tables_ = [
                {
                    k: data[f"{k}_{n}"]
                    for k in ("grams", "counts", "contexts", "context_total", "context_types")
                }
                for n in range(model.order)
            ]
        return model

    def _base(self) -> int:
        return len(self.vocab_) + 1

    def _ids(self, text: str) -> np.ndarray:
        return np.array([self.vocab_.get(c, UNKNOWN) for c in text], dtype=np.int64)

    def _codes(self, x: np.ndarray, n: int) -> np.ndarray:
        """Integer code of every n-gram of ``x`` (base = vocabulary size)."""
        base = self._base()
        codes = np.zeros(max(len(x) - n + 1, 0), dtype=np.int64)
        for k in range(n):
            codes = codes * base + x[k : len(x) - n + 1 + k]
        return codes

    def _check_fitted(self) -> None:
        if not self.tables_:
            raise InputError("CharNgramLM is not fitted; call fit(texts) or load(folder) first.")


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[key] for each query, 0 where the key is absent (keys are sorted)."""
    if len(keys) == 0:
        return np.zeros(len(queries))
    at = np.clip(np.searchsorted(keys, queries), 0, len(keys) - 1)
    return np.where(keys[at] == queries, values[at], 0.0)
