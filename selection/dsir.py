"""DSIR: data selection by importance resampling on hashed n-gram features.

Xie, Santurkar, Ma, Liang (2023), "Data Selection for Language Models via Importance Resampling".

Features are hashed unigrams and n-grams of a word/punctuation tokenisation (lowercased), computed
for a whole batch at once in numpy: the text is turned into code points, token boundaries and
polynomial token hashes come from array operations, and n-gram hashes combine neighbouring
token hashes; no Python loop runs per token or per n-gram. Bag-of-n-gram models of the target
and raw data are Laplace-smoothed bucket frequencies; a document's log importance weight is the
sum over its features of ``log p_target(f) - log p_raw(f)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Method = Literal["gumbel", "topk"]
TargetMode = Literal["mixture", "separate"]

_U64 = np.uint64
_MASK = (1 << 64) - 1
_P = np.uint64(0x100000001B3)  # FNV-64 prime: the polynomial base of token hashes
_SALT = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the whole word (vectorised)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U64(30))
        x = x * _U64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> _U64(27))
        x = x * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def _class_table() -> np.ndarray:
    """0 for whitespace (and the document separator), 1 for word characters, 2 for punctuation,
    for every code point (one gather per batch instead of a dozen comparisons per character)."""
    cp = np.arange(0x110000, dtype=np.int64)
    ascii_word = (
        ((cp >= 48) & (cp <= 57)) | ((cp >= 97) & (cp <= 122)) | ((cp >= 65) & (cp <= 90))
    ) | (cp == 95)
    # Letters of other scripts are word characters; the general punctuation, symbol and
    # CJK punctuation blocks are not (WordPunct-style tokenisation).
    other_word = (
        (cp >= 0xC0)
        & (cp != 0xD7)
        & (cp != 0xF7)
        & ~((cp >= 0x2000) & (cp < 0x2C00))
        & ~((cp >= 0x3000) & (cp < 0x3040))
        & ~((cp >= 0xFF00) & (cp < 0xFF10))
    )
    space = (
        (cp <= 32)
        | (cp == 0x85)
        | (cp == 0xA0)
        | (cp == 0x3000)
        | ((cp >= 0x2000) & (cp <= 0x200B))
        | (cp == 0x2028)
        | (cp == 0x2029)
        | (cp == 0x202F)
        | (cp == 0x205F)
    )
    classes = np.full(cp.shape, 2, dtype=np.int8)
    classes[ascii_word | other_word] = 1
    classes[space] = 0
    return classes


_CLASSES: np.ndarray | None = None


def _char_classes(cp: np.ndarray) -> np.ndarray:
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _class_table()
    return _CLASSES[cp]


@dataclass(frozen=True)
class HashedNgrams:
    """Feature occurrences of a batch: which document, which bucket (one entry per n-gram)."""

    doc: np.ndarray
    bucket: np.ndarray
    n_docs: int

    def totals(self, buckets: int) -> np.ndarray:
        return np.bincount(self.bucket, minlength=buckets).astype(np.float64)

    def per_doc(self, values: np.ndarray) -> np.ndarray:
        """Sum ``values[bucket]`` (one row per column of ``values``) per document."""
        if values.ndim == 1:
            return np.bincount(self.doc, weights=values[self.bucket], minlength=self.n_docs)
        return np.stack(
            [np.bincount(self.doc, weights=v[self.bucket], minlength=self.n_docs) for v in values],
            axis=1,
        )


def hashed_ngrams(texts: Sequence[str], *, ngrams: int = 2, buckets: int = 10000) -> HashedNgrams:
    """Hash the 1..``ngrams``-grams of every text into ``buckets`` (vectorised over the batch)."""
    n_docs = len(texts)
    empty = HashedNgrams(np.zeros(0, np.int64), np.zeros(0, np.int64), n_docs)
    if n_docs == 0:
        return empty
    joined = "\x00".join(texts)
    if joined.count("\x00") != n_docs - 1:  # a text holds NUL itself: it must not split docs
        joined = "\x00".join(t.replace("\x00", " ") for t in texts)
    cp = np.frombuffer(joined.lower().encode("utf-32-le"), dtype=np.uint32)
    separators = np.flatnonzero(cp == 0)
    classes = _char_classes(cp)
    inside = classes > 0
    starts = inside.copy()
    starts[1:] &= classes[1:] != classes[:-1]
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return empty
    first = starts[idx]  # over the characters inside tokens only: fewer than all characters
    token_of = np.cumsum(first, dtype=np.int32) - 1
    segments = np.flatnonzero(first)
    token_start = idx[segments]
    offset = np.arange(idx.size, dtype=np.int64) - segments[token_of]
    powers = np.empty(int(offset.max()) + 1, dtype=np.uint64)
    powers[0] = 1
    with np.errstate(over="ignore"):
        if powers.size > 1:
            powers[1:] = _P
            powers = np.cumprod(powers, dtype=np.uint64)
        terms = (cp[idx].astype(np.uint64) + _U64(1)) * powers[offset]
    token_hash = _mix(np.add.reduceat(terms, segments))
    token_doc = np.searchsorted(separators, token_start)
    docs, hashes = [token_doc], [token_hash]
    gram = token_hash
    for n in range(2, ngrams + 1):
        with np.errstate(over="ignore"):
            gram = _mix(gram[:-1] * _P + token_hash[n - 1 :] + _SALT * _U64(n))
        same_doc = token_doc[: len(gram)] == token_doc[n - 1 :]
        docs.append(token_doc[: len(gram)][same_doc])
        hashes.append(gram[same_doc])
    bucket = (np.concatenate(hashes) % _U64(buckets)).astype(np.int64)
    return HashedNgrams(np.concatenate(docs), bucket, n_docs)


def smoothed(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """Laplace-smoothed bucket probabilities (rows of ``counts`` are separate distributions)."""
    counts = np.asarray(counts, dtype=np.float64) + smoothing
    return counts / counts.sum(axis=-1, keepdims=True)


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats for smoothed (strictly positive) distributions."""
    return float(np.sum(p * (np.log(p) - np.log(q))))


class HashedNgramDSIR:
    """Importance resampling with hashed n-gram bag-of-words models (scikit-learn style).

    Args:
        ngrams: largest n-gram order (unigrams are always included).
        buckets: number of hash buckets.
        smoothing: Laplace pseudo-count added to every bucket.
        target_mode: ``mixture`` mixes the target models by ``proportions`` into one target;
            ``separate`` computes one weight per target and selects ``proportions`` of the rows
            for each (as DSIR's ``separate_targets``).
        proportions: weight of each target; default: proportional to its n-gram count.
    """

    def __init__(
        self,
        ngrams: int = 2,
        buckets: int = 10000,
        smoothing: float = 1.0,
        target_mode: TargetMode = "mixture",
        proportions: Sequence[float] | None = None,
    ) -> None:
        self.ngrams = ngrams
        self.buckets = buckets
        self.smoothing = smoothing
        self.target_mode = target_mode
        self.proportions = list(proportions) if proportions is not None else None

    def featurize(self, texts: Sequence[str]) -> HashedNgrams:
        return hashed_ngrams(texts, ngrams=self.ngrams, buckets=self.buckets)

    def counts(self, batches: Iterable[Sequence[str]]) -> np.ndarray:
        """Bucket totals over a stream of text batches (memory bounded by one batch)."""
        total = np.zeros(self.buckets)
        for texts in batches:
            total += self.featurize(texts).totals(self.buckets)
        return total

    def fit_target(self, target_counts: Sequence[np.ndarray]) -> HashedNgramDSIR:
        """Fit the target models from the bucket totals of each target dataset."""
        counts = np.stack([np.asarray(c, dtype=np.float64) for c in target_counts])
        if self.proportions is None:
            weights = counts.sum(axis=1)
        else:
            weights = np.asarray(self.proportions, dtype=np.float64)
        if weights.shape != (len(counts),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"proportions {self.proportions} must be {len(counts)} "
                "non-negative numbers, not all zero"
            )
        self.target_counts_ = counts
        self.proportions_ = weights / weights.sum()
        probs = smoothed(counts, self.smoothing)
        if self.target_mode == "mixture":
            probs = (self.proportions_[:, None] * probs).sum(axis=0, keepdims=True)
        self.target_probs_ = probs
        return self

    def fit_raw(self, raw_counts: np.ndarray) -> HashedNgramDSIR:
        """Fit the raw model and the log ratio every weight is a sum of."""
        self.raw_counts_ = np.asarray(raw_counts, dtype=np.float64)
        self.raw_probs_ = smoothed(self.raw_counts_, self.smoothing)
        self.log_diff_ = np.log(self.target_probs_) - np.log(self.raw_probs_)[None, :]
        return self

    def log_weights(self, texts: Sequence[str]) -> np.ndarray:
        """Log importance weights, shape ``(len(texts), n_weights)``."""
        return np.asarray(self.featurize(texts).per_doc(self.log_diff_)).reshape(len(texts), -1)

    def quotas(self, k: int) -> list[int]:
        """How many rows each weight column selects (one column in mixture mode)."""
        if self.log_diff_.shape[0] == 1:
            return [k]
        raw = self.proportions_ * k
        quota = np.floor(raw).astype(int)
        for j in np.argsort(-(raw - quota), kind="stable")[: k - quota.sum()]:
            quota[j] += 1  # largest remainders, so quotas add up to k
        return [int(q) for q in quota]

    def resample_keys(
        self, log_weights: np.ndarray, column: int, start: int, n: int, *, method: Method,
        seed: int,
    ) -> np.ndarray:
        """Resampling keys of rows ``start .. start + len(log_weights)`` of ``n`` rows, for
        weight column ``column``: the log weights, plus Gumbel(0, 1) noise for ``gumbel``.

        The noise is the stream one generator seeded with ``seed`` draws for all columns in
        turn (``n`` values each), so any slice of rows gets the values a single draw over all
        of them would (the generator jumps ahead, one double per value), and shards of a
        dataset compute their own keys.
        """
        keys = np.asarray(log_weights, dtype=np.float64).copy()
        if method == "gumbel":
            rng = np.random.default_rng(seed)
            rng.bit_generator.advance(column * n + start)
            keys += rng.gumbel(size=len(keys))
        return keys

    def resample(
        self, log_weights: np.ndarray, k: int, *, method: Method = "gumbel", seed: int = 0
    ) -> np.ndarray:
        """Indices of ``k`` rows chosen without replacement (sorted).

        ``gumbel`` adds Gumbel(0, 1) noise to the log weights and keeps the top k, which samples
        k rows without replacement with probabilities proportional to the weights (the
        Gumbel-top-k trick); ``topk`` keeps the k largest weights. Ties go to the earlier row;
        each column of ``separate`` targets takes its quota from the rows earlier ones left.
        """
        from thresher.selection.ranking import top_indices

        weights = np.asarray(log_weights, dtype=np.float64).reshape(len(log_weights), -1)
        n = len(weights)
        taken = np.zeros(n, dtype=bool)
        for j, quota in enumerate(self.quotas(min(k, n))):
            keys = self.resample_keys(weights[:, j], j, 0, n, method=method, seed=seed)
            taken[top_indices(keys, min(quota, int((~taken).sum())), ~taken)] = True
        return np.flatnonzero(taken)

    def kl_report(self, selected_counts: np.ndarray) -> dict[str, float]:
        """The paper's KL reduction: mean over targets of KL(target||raw) - KL(target||selected)."""
        targets = smoothed(self.target_counts_, self.smoothing)
        raw = self.raw_probs_
        chosen = smoothed(selected_counts, self.smoothing)
        to_raw = np.array([kl(t, raw) for t in targets])
        to_sel = np.array([kl(t, chosen) for t in targets])
        w = self.proportions_
        return {
            "kl_target_raw": float(w @ to_raw),
            "kl_target_selected": float(w @ to_sel),
            "kl_reduction": float(w @ (to_raw - to_sel)),
        }

    def save(self, folder: str | Path) -> None:
        """Persist the learned arrays plus a JSON config (never a pickle)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(
            folder / "dsir.npz",
            target_counts=self.target_counts_,
            raw_counts=self.raw_counts_,
            proportions=self.proportions_,
        )
        config = {
            "ngrams": self.ngrams,
            "buckets": self.buckets,
            "smoothing": self.smoothing,
            "target_mode": self.target_mode,
            "proportions": self.proportions,
        }
        (folder / "dsir.json").write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> HashedNgramDSIR:
        folder = Path(folder)
        model = cls(**json.loads((folder / "dsir.json").read_text()))
        with np.load(folder / "dsir.npz") as data:
            model.fit_target(list(data["target_counts"]))
            model.fit_raw(data["raw_counts"])
        return model
