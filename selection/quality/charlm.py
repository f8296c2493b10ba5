"""Language-likeness from a character n-gram model fitted on the requests of the same data.

Interpolated absolute discounting (Ney, Essen & Kneser, 1994, "On structuring probabilistic
dependences in stochastic language modelling"), counted with numpy over integer-coded n-grams.
A response whose characters cost more bits than the model's own unigram entropy (letters drawn
independently at their frequencies) carries no structure of the language it answers in: random
keyboard noise, mojibake, or pseudo-words. This is a cheap stand-in for a causal LM's perplexity
(see :mod:`thresher.selection.quality.perplexity`) that runs over millions of rows on a CPU.

The model is a function of n-gram counts only, and counts merge by addition: :func:`count_ngrams`
over each shard, :func:`merge_counts` on the driver, :meth:`CharNgramLM.from_counts` once. So the
model fitted over a dataset is the same however the dataset was split. Characters are coded by
their code point modulo a prime (a fixed alphabet, so shards agree on codes without sharing a
vocabulary); the rare ones are pooled into one unknown character when the model is built.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thresher.core.errors import InputError, NotFoundError
from thresher.core.record import Record
from thresher.selection.quality.turns import turns

UNKNOWN = 0  # id of every character seen too rarely in training
# Ids are 1 + code point mod ALPHABET (a prime; saved models record it); 0 is the unknown id.
ALPHABET = 2039
BASE = ALPHABET + 1


def char_ids(texts: Sequence[str], fold_case: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Character ids of all ``texts`` concatenated, and each text's length.

    Folding case by default: case says little about which language a text is in (an
    all-capitals headline is English), and much about a corpus's habits."""
    if fold_case:
        texts = [t.lower() for t in texts]
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    joined = "".join(texts)
    cp = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    return 1 + cp % ALPHABET, lengths


def _offsets(lengths: np.ndarray) -> np.ndarray:
    """Position of every character within its own text."""
    total = int(lengths.sum())
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - starts


def _codes(ids: np.ndarray, n: int) -> np.ndarray:
    """Code of the n-gram ending at each position (garbage where the history is short)."""
    codes = ids.copy()
    for k in range(1, n):
        shifted = np.zeros_like(ids)
        shifted[k:] = ids[:-k]
        codes = codes + shifted * BASE**k
    return codes


def count_ngrams(texts: Sequence[str], order: int = 4, fold_case: bool = True) -> np.ndarray:
    """Counts of every character n-gram (n = 1..order) within each text: rows (n, code, count).

    No n-gram spans two texts. The rows are sorted, so equal inputs give equal arrays.
    """
    texts = [t for t in texts if t]
    if not texts:
        return np.zeros((0, 3), dtype=np.int64)
    ids, lengths = char_ids(texts, fold_case)
    within = _offsets(lengths)
    last = np.cumsum(lengths) - 1  # each text's last position
    # One sort, of the longest n-grams. Every shorter n-gram either is the prefix of the one
    # (n+1)-gram that extends it by the next character, or ends its text; a prefix is the
    # code divided by BASE (the oldest character is the highest digit), which keeps the order.
    grams, counts = np.unique(_codes(ids, order)[within >= order - 1], return_counts=True)
    parts = [np.column_stack([np.full(len(grams), order), grams, counts])]
    for n in range(order - 1, 0, -1):
        ends = last[lengths >= n]  # the n-grams that end a text (no longer n-gram has them)
        tail = sum(ids[ends - k] * BASE**k for k in range(n))
        keys = np.r_[grams // BASE, tail]
        weights = np.r_[counts, np.ones(len(ends), dtype=np.int64)]
        if len(ends):  # the prefixes are sorted already; the few text ends are not
            order_ = np.argsort(keys, kind="stable")
            keys, weights = keys[order_], weights[order_]
        if not len(keys):
            grams, counts = keys, weights
        else:
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            grams, counts = keys[starts], np.add.reduceat(weights, starts)
        parts.append(np.column_stack([np.full(len(grams), n), grams, counts]))
    return np.concatenate(parts[::-1]).astype(np.int64)


class HashIndex:
    """Position of int64 keys in a sorted array, by open addressing (linear probing).

    A binary search touches ~20 cache lines per query in a table of millions of n-grams; a hash
    probe touches one or two. Built once per model, vectorised."""

    def __init__(self, keys: np.ndarray) -> None:
        size = 1 << max(4, int(2 * max(len(keys), 1) - 1).bit_length())  # load factor <= 0.5
        self.mask = np.int64(size - 1)
        self.keys = np.full(size, -1, dtype=np.int64)  # codes are >= 0
        self.where = np.full(size, -1, dtype=np.int64)
        todo = np.arange(len(keys))
        probe = 0
        while len(todo):
            slot = (self._slot(keys[todo]) + probe) & self.mask
            free = self.keys[slot] == -1
            slot, todo_free = slot[free], todo[free]
            first = np.unique(slot, return_index=True)[1]  # one key per free slot per round
            self.keys[slot[first]] = keys[todo_free[first]]
            self.where[slot[first]] = todo_free[first]
            placed = np.zeros(len(todo), dtype=bool)
            placed[np.flatnonzero(free)[first]] = True
            todo = todo[~placed]
            probe += 1

    def _slot(self, keys: np.ndarray) -> np.ndarray:
        mixed = (keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)
        return mixed.astype(np.int64) & self.mask

    def find(self, queries: np.ndarray) -> np.ndarray:
        """Index of each query in the original keys, or -1 where absent."""
        out = np.full(len(queries), -1, dtype=np.int64)
        todo = np.arange(len(queries))
        slot = self._slot(queries)
        while len(todo):
            at = self.keys[slot]
            hit = at == queries[todo]
            out[todo[hit]] = self.where[slot[hit]]
            going = ~hit & (at != -1)
            todo, slot = todo[going], (slot[going] + 1) & self.mask
        return out


def merge_counts(*tables: np.ndarray) -> np.ndarray:
    """Sum count tables whose rows are (key..., count): sorted by key, duplicates added."""
    table = np.concatenate([t for t in tables if len(t)] or [tables[0]])
    if not len(table):
        return table
    keys = table[:, :-1]
    order = np.lexsort(keys.T[::-1])
    table = table[order]
    keys = table[:, :-1]
    new = np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)]
    starts = np.flatnonzero(new)
    return np.column_stack([keys[starts], np.add.reduceat(table[:, -1], starts)])


@dataclass
class CharNgramLM:
    """A character n-gram model with interpolated absolute discounting.

    Args:
        order: longest n-gram (4 sees most English syllables).
        discount: absolute discount subtracted from every seen count.
        min_char_count: characters seen fewer times than this share the unknown id.
        fold_case: count and price lower-cased text.
    """

    order: int = 4
    discount: float = 0.75
    min_char_count: int = 5
    fold_case: bool = True
    known_: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), init=False, repr=False)
    tables_: list[dict[str, np.ndarray]] = field(default_factory=list, init=False, repr=False)
    unigram_entropy_: float = field(default=float("nan"), init=False)
    _indexes: list[HashIndex] = field(default_factory=list, init=False, repr=False)

    def fit(self, texts: Sequence[str]) -> CharNgramLM:
        """Count n-grams of ``texts`` (non-empty ones) and derive the back-off weights."""
        if self.order < 1:
            raise InputError(f"order must be at least 1, got {self.order}.", field="order")
        texts = [t for t in texts if t and t.strip()]
        if not texts:
            raise InputError("CharNgramLM.fit needs at least one non-empty text.", field="texts")
        return self.from_counts(count_ngrams(texts, self.order, self.fold_case))

    def from_counts(self, table: np.ndarray) -> CharNgramLM:
        """Build the model from (summed) :func:`count_ngrams` rows."""
        if not len(table):
            raise InputError("CharNgramLM needs counts of at least one text.", field="texts")
        unigrams = table[table[:, 0] == 1]
        self.known_ = np.zeros(BASE, dtype=bool)
        self.known_[unigrams[unigrams[:, 2] >= self.min_char_count, 1]] = True
        self.known_[UNKNOWN] = False
        self.tables_ = []
        self._indexes = []
        for n in range(1, self.order + 1):
            rows = table[table[:, 0] == n]
            codes = self._pool(rows[:, 1], n)
            grams, inverse = np.unique(codes, return_inverse=True)
            gram_counts = np.bincount(inverse, weights=rows[:, 2], minlength=len(grams))
            self.tables_.append({"grams": grams, "counts": gram_counts.astype(np.float64)})
        # What follows each n-gram (its total count and number of distinct next characters),
        # aligned with the n-gram table: one search per order serves both lookups.
        for n in range(1, self.order + 1):
            own = self.tables_[n - 1]
            own["next_total"] = np.zeros(len(own["grams"]))
            own["next_types"] = np.zeros(len(own["grams"]))
            if n < self.order:
                longer = self.tables_[n]
                contexts = longer["grams"] // BASE
                ctx, first = np.unique(contexts, return_index=True)
                if len(ctx):
                    at = np.searchsorted(own["grams"], ctx)
                    own["next_total"][at] = np.add.reduceat(longer["counts"], first)
                    own["next_types"][at] = np.diff(np.append(first, len(contexts)))
        p = self.tables_[0]["counts"] / self.tables_[0]["counts"].sum()
        self.unigram_entropy_ = float(-(p * np.log2(p)).sum())
        return self

    @property
    def train_chars(self) -> int:
        """How many characters the model was counted on (0 before it is fitted)."""
        return int(self.tables_[0]["counts"].sum()) if self.tables_ else 0

    def _pool(self, codes: np.ndarray, n: int) -> np.ndarray:
        """Recode n-grams with every rare character replaced by the unknown id."""
        out = np.zeros_like(codes)
        rest = codes.copy()
        for k in range(n):
            digit = rest % BASE
            rest //= BASE
            out += np.where(self.known_[digit], digit, UNKNOWN) * BASE**k
        return out

    def bits_per_char(self, texts: Sequence[str]) -> np.ndarray:
        """Cross-entropy of each text in bits per character (NaN for an empty text)."""
        self._check_fitted()
        out = np.full(len(texts), np.nan)
        present = [i for i, t in enumerate(texts) if t]
        if not present:
            return out
        ids, lengths = char_ids([texts[i] for i in present], self.fold_case)
        ids = np.where(self.known_[ids], ids, UNKNOWN)
        bits = -np.log2(self._probs(ids, _offsets(lengths)))
        starts = np.cumsum(lengths) - lengths
        out[present] = np.add.reduceat(bits, starts) / lengths
        return out

    def known_share(self, texts: Sequence[str]) -> np.ndarray:
        """Share of each text's characters that the model has seen often enough to price."""
        self._check_fitted()
        out = np.full(len(texts), np.nan)
        present = [i for i, t in enumerate(texts) if t]
        if present:
            ids, lengths = char_ids([texts[i] for i in present], self.fold_case)
            starts = np.cumsum(lengths) - lengths
            out[present] = np.add.reduceat(self.known_[ids].astype(float), starts) / lengths
        return out

    def _probs(self, x: np.ndarray, within: np.ndarray) -> np.ndarray:
        """P(x_i | up to order-1 previous characters), interpolated down to a uniform floor.

        The first characters of a text have shorter histories; no n-gram spans the start, so a
        text is not charged for how other texts happened to begin.
        """
        prob = np.full(len(x), 1.0 / BASE)
        first = self.tables_[0]
        prev_idx = prev_found = None
        for n in range(1, self.order + 1):
            table = self.tables_[n - 1]
            at = within >= n - 1
            codes = _codes(x, n)
            where = self._index(n).find(codes)
            found = at & (where >= 0)
            idx = np.maximum(where, 0)
            count = np.where(found, table["counts"][idx] if len(where) else 0.0, 0.0)
            if n == 1:
                total = np.full(len(x), first["counts"].sum())
                types = np.full(len(x), float(len(first["grams"])))
            else:
                # The context of the n-gram ending at i is the (n-1)-gram ending at i - 1.
                below = self.tables_[n - 2]
                pidx = np.r_[0, prev_idx[:-1]]
                pfound = np.r_[False, prev_found[:-1]]
                total = np.where(pfound, below["next_total"][pidx], 0.0)
                types = np.where(pfound, below["next_types"][pidx], 0.0)
            seen = total > 0
            safe = np.where(seen, total, 1.0)
            backoff = np.where(seen, self.discount * types / safe, 1.0)
            own = np.where(seen, np.maximum(count - self.discount, 0.0) / safe, 0.0)
            prob = np.where(at, own + backoff * prob, prob)
            prev_idx, prev_found = idx, found
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
        np.savez(folder / "tables.npz", known=self.known_, **arrays)
        config = {
            "order": self.order,
            "discount": self.discount,
            "min_char_count": self.min_char_count,
            "fold_case": self.fold_case,
            "alphabet": ALPHABET,
            "format": 2,
            "unigram_entropy": self.unigram_entropy_,
        }
        (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False))

    @classmethod
    def load(cls, folder: str | Path) -> CharNgramLM:
        folder = Path(folder)
        if not (folder / "config.json").exists():
            raise NotFoundError(f"No character model in {folder} (config.json is missing).")
        config = json.loads((folder / "config.json").read_text())
        if config.get("alphabet") != ALPHABET or config.get("format") != 2:
            raise InputError(
                f"The character model in {folder} was saved by an older Thresher (different "
                "character coding); fit it again.",
                field="folder",
            )
        model = cls(config["order"], config["discount"], config["min_char_count"],
                    bool(config.get("fold_case", True)))  # fmt: skip
        model.unigram_entropy_ = float(config["unigram_entropy"])
        with np.load(folder / "tables.npz") as data:
            model.known_ = data["known"]
            model.tables_ = [
                {k: data[f"{k}_{n}"] for k in ("grams", "counts", "next_total", "next_types")}
                for n in range(model.order)
            ]
        return model

    def _index(self, n: int) -> HashIndex:
        if len(self._indexes) != len(self.tables_):
            self._indexes = [HashIndex(t["grams"]) for t in self.tables_]
        return self._indexes[n - 1]

    def _check_fitted(self) -> None:
        if not self.tables_:
            raise InputError("CharNgramLM is not fitted; call fit(texts) or load(folder) first.")
