"""Deduplication: exact (normalised hash), near (MinHash + LSH) and semantic (embeddings).

Near duplicates follow Broder, 1997 ("On the resemblance and containment of documents") and Lee
et al., 2022 ("Deduplicating Training Data Makes Language Models Better"): MinHash signatures of
word n-gram shingles, LSH for candidates, then the exact Jaccard of the shingle sets to confirm.
Semantic duplicates follow Abbas et al., 2023 ("SemDeDup"): cosine similarity of embeddings above
a threshold. Duplicates form clusters (union-find); one representative per cluster is kept, the
most fluent copy by default (a character model of the data prices typos and dropped words), and
every other member is dropped with a reason that names the id it duplicates.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from core.errors import ConfigError, require
from core.record import Record
from selection.quality.charlm import CharNgramLM
from selection.quality.heuristics import normalise
from selection.quality.turns import turns

Method = Literal["exact", "minhash", "semantic"]
Prefer = Literal["first", "fluent", "score"]
FLUENCY_SAMPLE = 2000
FLUENCY_CHARS = 2000  # enough text to price a copy's typos


def record_text(record: Record) -> str:
    """Everything a duplicate shares: instruction, input and every response."""
    parts: list[str] = []
    for turn in turns(record):
        parts.extend((turn.instruction, turn.input, turn.response))
    return "\n".join(p for p in parts if p)


def shingles(text: str, n: int) -> np.ndarray:
    """Sorted unique 32-bit hashes of the normalised word n-grams of ``text``."""
    tokens = normalise(text).split()
    if len(tokens) < n:
        grams = [" ".join(tokens)] if tokens else []
    else:
        grams = [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return np.unique(np.array([zlib.crc32(g.encode()) for g in grams], dtype=np.uint32))


@dataclass(slots=True)
class DedupResult:
    """Which records survive and, for each dropped one, the id it duplicates."""

    keep: np.ndarray  # bool, one per record
    duplicate_of: list[str | None]
    reasons: list[str | None]

    @property
    def clusters(self) -> int:
        return int(sum(1 for d in self.duplicate_of if d is not None))


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class Deduplicator:
    """Finds duplicate clusters and keeps one representative of each.

    Args:
        method: ``exact`` (hash of the case-folded, punctuation-free text), ``minhash`` (word
            n-gram Jaccard at least ``threshold``) or ``semantic`` (cosine at least
            ``threshold`` between embeddings).
        threshold: similarity at which two records are duplicates (minhash, semantic).
        ngram: shingle size in words (minhash).
        num_perm: MinHash permutations (minhash).
        max_df: shingles found in more than this share of the records (and at least 10 of
            them) are boilerplate, such as a shared instruction template, and are ignored.
        prefer: which member represents a cluster: the ``first``, the most ``fluent`` (lowest
            bits per character under a character model of the data), or the best ``score``.
        score: the score to rank by when ``prefer`` is ``score``; ``largest`` says which way.
        embedder: a :class:`core.embedding.Embedder` (semantic).
        name: the step's name.
    """

    method: Method = "minhash"
    threshold: float = 0.7
    ngram: int = 3
    num_perm: int = 128
    max_df: float = 0.01
    prefer: Prefer = "fluent"
    score: str | None = None
    largest: bool = True
    embedder: Any = None
    name: str = "dedup"
    reasons_: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.method not in ("exact", "minhash", "semantic"):
            raise ConfigError(
                f"Unknown dedup method {self.method!r}; use exact, minhash or semantic.",
                field="method",
            )
        if not 0 < self.threshold <= 1:
            raise ConfigError(
                f"threshold must be in (0, 1], got {self.threshold}.", field="threshold"
            )
        if self.prefer == "score" and not self.score:
            raise ConfigError("prefer: score needs 'score' (the score to rank by).", field="score")
        if self.method == "semantic" and self.embedder is None:
            raise ConfigError("semantic dedup needs an embedder.", field="embedder")

    def decide(self, records: Sequence[Record]) -> DedupResult:
        """Cluster ``records`` and keep one representative per cluster."""
        texts = [record_text(r) for r in records]
        groups = _UnionFind(len(records))
        pairs = {
            "exact": self._exact_pairs,
            "minhash": self._minhash_pairs,
            "semantic": self._semantic_pairs,
        }[self.method](texts)
        for a, b in pairs:
            groups.union(a, b)
        roots = [groups.find(i) for i in range(len(records))]
        rank = self._rank(records, texts, roots)
        best: dict[int, int] = {}
        for i, root in enumerate(roots):
            if root not in best or rank[i] < rank[best[root]]:
                best[root] = i
        keep = np.zeros(len(records), dtype=bool)
        duplicate_of: list[str | None] = [None] * len(records)
        reasons: list[str | None] = [None] * len(records)
        for i, root in enumerate(roots):
            chosen = best[root]
            keep[i] = chosen == i
            if not keep[i]:
                duplicate_of[i] = records[chosen].id
                reasons[i] = f"{self.method}_duplicate: duplicate of {records[chosen].id}"
        return DedupResult(keep, duplicate_of, reasons)

    def select(self, records: Sequence[Record], k: int | None = None) -> list[Record]:
        """The representatives, in input order (at most ``k``); ``reasons_`` maps dropped ids
        to the id each duplicates."""
        result = self.decide(records)
        self.reasons_ = {
            r.id: why for r, why in zip(records, result.reasons, strict=True) if why is not None
        }
        kept = [r for r, ok in zip(records, result.keep, strict=True) if ok]
        return kept if k is None else kept[:k]

    def keep(self, records: Sequence[Record]) -> tuple[np.ndarray, list[str | None]]:
        """Filter form, for a batch that holds every candidate (or for small inputs)."""
        result = self.decide(records)
        return result.keep, result.reasons

    def _rank(self, records: Sequence[Record], texts: list[str], roots: list[int]) -> np.ndarray:
        """Position of each record in the keep order (lower is kept); ties go to the earlier."""
        order = np.arange(len(records))
        cost = np.zeros(len(records))
        if self.prefer == "fluent":
            sizes = Counter(roots)
            members = [i for i, root in enumerate(roots) if sizes[root] > 1]
            if members:
                # A sample of the data is enough to price rare character sequences (typos).
                sample = texts[:: max(1, len(texts) // FLUENCY_SAMPLE)]
                model = CharNgramLM().fit(sample + [texts[i] for i in members])
                cost[members] = model.bits_per_char([texts[i] for i in members])
        elif self.prefer == "score":
            values = np.array([r.scores.get(self.score or "", np.nan) for r in records])
            cost = np.nan_to_num(-values if self.largest else values, nan=np.inf)
        return np.lexsort((order, cost)).argsort()

    # --- streaming form: per-record signatures, gathered, then clustered on the driver ----------

    def signatures(self, records: Sequence[Record]) -> np.ndarray:
        """One row per record: (cost, key...) where cost ranks copies (lower is kept) and the
        key is what duplicates share: a 52-bit text hash (exact), a MinHash signature (minhash)
        or an embedding (semantic). Boilerplate shingles are judged within the batch."""
        texts = [record_text(r) for r in records]
        cost = np.zeros(len(records))
        if self.prefer == "fluent" and texts:
            # Fitted on the batch itself: a copy's typos are the n-grams nobody else has.
            cut = [t[:FLUENCY_CHARS] for t in texts]
            cost = CharNgramLM().fit(cut).bits_per_char(cut)
            cost = np.nan_to_num(cost, nan=np.inf)
        elif self.prefer == "score":
            values = np.array([r.scores.get(self.score or "", np.nan) for r in records])
            cost = np.nan_to_num(-values if self.largest else values, nan=np.inf)
        if self.method == "exact":
            keys = np.array(
                [[int(hashlib.sha256(normalise(t).encode()).hexdigest()[:13], 16)] for t in texts],
                dtype=np.float64,
            ).reshape(-1, 1)
        elif self.method == "minhash":
            keys = np.array([self._sketch(s).hashvalues for s in self._shingle_sets(texts)],
                            dtype=np.float64).reshape(-1, self.num_perm)  # fmt: skip
        else:
            keys = self.embedder.encode(texts).astype(np.float64)
        return np.column_stack([cost, keys]) if len(texts) else np.zeros((0, 1 + keys.shape[1]))

    def cluster_signatures(self, signatures: np.ndarray) -> np.ndarray:
        """Index of each row's representative (itself if kept), from :meth:`signatures` rows
        given in input order."""
        cost, keys = signatures[:, 0], signatures[:, 1:]
        n = len(signatures)
        groups = _UnionFind(n)
        if self.method == "exact":
            first: dict[float, int] = {}
            for i, key in enumerate(keys[:, 0].tolist()):
                groups.union(first.setdefault(key, i), i)
        elif self.method == "minhash":
            from datasketch import LeanMinHash, MinHash, MinHashLSH

            lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
            like = MinHash(num_perm=self.num_perm, seed=1)
            values = keys.astype(like.hashvalues.dtype)
            for i in range(n):
                if not values[i].any():
                    continue  # no shingles: nothing to compare
                sketch = LeanMinHash(seed=1, hashvalues=values[i], scheme=like.scheme)
                for j in lsh.query(sketch):
                    if float(np.mean(values[i] == values[j])) >= self.threshold:
                        groups.union(j, i)
                lsh.insert(i, sketch)
        else:
            for a, b in self._semantic_pairs_from(keys.astype(np.float32)):
                groups.union(a, b)
        rank = np.lexsort((np.arange(n), cost)).argsort()
        best: dict[int, int] = {}
        roots = [groups.find(i) for i in range(n)]
        for i, root in enumerate(roots):
            if root not in best or rank[i] < rank[best[root]]:
                best[root] = i
        return np.array([best[r] for r in roots], dtype=np.int64)

    def _shingle_sets(self, texts: list[str]) -> list[np.ndarray]:
        sets = [shingles(t, self.ngram) for t in texts]
        df = Counter(h for s in sets for h in s.tolist())
        limit = max(10, self.max_df * len(texts))
        boiler = np.array(sorted(h for h, c in df.items() if c > limit), dtype=np.uint32)
        return [s[~np.isin(s, boiler)] for s in sets] if len(boiler) else sets

    def _sketch(self, shingle_set: np.ndarray) -> Any:
        from datasketch import MinHash

        sketch = MinHash(num_perm=self.num_perm, seed=1)
        if len(shingle_set):
            sketch.update_batch([int(h).to_bytes(4, "little") for h in shingle_set])
        else:
            sketch.hashvalues[:] = 0  # marks "no shingles": never a duplicate
        return sketch

    def _exact_pairs(self, texts: list[str]) -> list[tuple[int, int]]:
        first: dict[str, int] = {}
        pairs = []
        for i, text in enumerate(texts):
            key = hashlib.sha256(normalise(text).encode()).hexdigest()
            if key in first:
                pairs.append((first[key], i))
            else:
                first[key] = i
        return pairs

    def _minhash_pairs(self, texts: list[str]) -> list[tuple[int, int]]:
        datasketch = require("datasketch", "selection")
        sets = self._shingle_sets(texts)
        lsh = datasketch.MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        pairs: list[tuple[int, int]] = []
        for i, s in enumerate(sets):
            if len(s) == 0:
                continue
            sketch = self._sketch(s)
            for j in lsh.query(sketch):
                other = sets[j]
                inter = len(np.intersect1d(s, other, assume_unique=True))
                if inter / (len(s) + len(other) - inter) >= self.threshold:
                    pairs.append((j, i))
            lsh.insert(i, sketch)
        return pairs

    def _semantic_pairs(self, texts: list[str]) -> list[tuple[int, int]]:
        if not texts:
            return []
        return self._semantic_pairs_from(self.embedder.encode(texts))

    def _semantic_pairs_from(self, vectors: np.ndarray) -> list[tuple[int, int]]:
        faiss = require("faiss", "selection")
        if len(vectors) == 0:
            return []
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        # Inner product of unit vectors is the cosine; the threshold is a radius.
        lims, _, found = index.range_search(vectors, float(self.threshold))
        pairs = []
        for i in range(len(vectors)):
            for j in found[lims[i] : lims[i + 1]]:
                if j < i:
                    pairs.append((int(j), i))
        return pairs
