"""Deduplication: exact (normalised hash), near (MinHash + LSH) and semantic (embeddings).

Near duplicates follow Broder, 1997 ("On the resemblance and containment of documents") and Lee
et al., 2022 ("Deduplicating Training Data Makes Language Models Better"): MinHash signatures of
word n-gram shingles (vectorised with numpy), banded LSH for candidates, then the signatures'
estimated Jaccard to confirm, of the whole row and of its answers alone (two questions on one
long passage share most of their shingles without being duplicates). A row's signature depends
on that row alone (its template, the shared instruction, is one shingle rather than hundreds),
so the clusters are the same however the input is batched or sharded, and rows that only share
a template are never duplicates.
Semantic duplicates follow Abbas et al., 2023 ("SemDeDup"): cosine similarity of embeddings above
a threshold. Duplicates form clusters (connected components); one representative per cluster is
kept, the most fluent copy by default (a character model of the data prices typos and dropped
words), ties by position, and every other member is dropped with a reason that names the id it
duplicates.

One path, in memory and on a cluster: each record gives a row (position, rank cost, id,
signature), each row some keys (an exact hash; one per LSH band; one shared key for semantic
dedup), rows sharing a key are turned into confirmed edges, and the edges' connected components
are the clusters. A job shuffles the keys by hash so that every partition holds all rows of its
keys (:mod:`thresher.selection.shuffle`); :meth:`Deduplicator.decide` does the same in one
partition.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from thresher.core.errors import ConfigError, require
from thresher.core.record import Record
from thresher.selection.quality.charlm import CharNgramLM
from thresher.selection.quality.heuristics import normalise, normalise_lines
from thresher.selection.quality.turns import turns

Method = Literal["exact", "minhash", "semantic"]
Prefer = Literal["first", "fluent", "score"]
FLUENCY_CHARS = 2000  # enough text to price a copy's typos
ANSWER_PERM = 32  # MinHash of the answers alone, to confirm a candidate pair
ID_BYTES = 60  # a row's id as carried beside its signature (longer ids are cut)
KEY_DTYPE = np.dtype([("band", "<u4"), ("key", "<u8"), ("pos", "<i8")])
CONFIRM_CHUNK = 65536  # candidate pairs whose signatures are compared at once


def record_text(record: Record) -> str:
    """Everything a duplicate shares: instruction, input and every response."""
    parts: list[str] = []
    for turn in turns(record):
        parts.extend((turn.instruction, turn.input, turn.response))
    return "\n".join(p for p in parts if p)


def _parts(record: Record) -> tuple[str, list[str]]:
    """(instruction, the non-empty inputs and responses): a row's template and its own
    content."""
    found = turns(record)
    task = found[0].instruction if found else ""
    return task, [p for t in found for p in (t.input, t.response) if p]


def _exact_key(record: Record) -> int:
    """52 bits of the hash of a row's normalised template and content."""
    task, parts = _parts(record)
    # normalise(rest) from its parts' cached forms (the rules normalised them already).
    text = normalise(task) + "\n" + normalise_lines(parts)
    return int(hashlib.sha256(text.encode()).hexdigest()[:13], 16)


class _WordHashes(dict[str, int]):
    """Word -> CRC32 + 1, computed once per distinct word (lookups run at C speed)."""

    def __missing__(self, word: str) -> int:
        h = self[word] = zlib.crc32(word.encode()) + 1
        return h


def shingle_sets(texts: Sequence[str], n: int, extra: Sequence[int] | None = None,
                 normalised: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Hashes of the normalised word n-grams of each text, unique per text: (hashes, lengths).

    A text shorter than ``n`` words is one shingle; ``extra`` adds one more hash per text (the
    template's) where it is non-zero; ``normalised`` says the texts are normalised already.
    Vectorised over all texts at once.
    """
    cache = _WordHashes()
    ids: list[int] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        tokens = (text if normalised else normalise(text)).split()
        lengths[i] = len(tokens)
        ids.extend(map(cache.__getitem__, tokens))
    x = np.array(ids, dtype=np.uint64)
    starts = np.cumsum(lengths) - lengths
    within = np.arange(len(x), dtype=np.int64) - np.repeat(starts, lengths)
    grams = x.copy()
    mult = np.uint64(0x9E3779B97F4A7C15)
    for k in range(1, n):
        prev = np.zeros_like(x)
        prev[k:] = x[:-k]
        grams = grams * mult + prev
    owner = np.repeat(np.arange(len(texts)), lengths)
    full = within >= n - 1
    # Texts shorter than n words: their last word's running hash covers all of them.
    short = (lengths > 0) & (lengths < n)
    last = np.zeros(len(x), dtype=bool)
    last[(starts + lengths - 1)[short]] = True
    if n > 1:
        partial = x.copy()
        for k in range(1, n - 1):
            prev = np.zeros_like(x)
            prev[k:] = x[:-k]
            partial = np.where(within >= k, partial * mult + prev, partial)
        grams = np.where(full, grams, partial)
    take = full | last
    hashes, owners = grams[take], owner[take]
    if extra is not None:
        e = np.asarray(extra, dtype=np.uint64)
        has = np.flatnonzero(e != 0)
        hashes = np.r_[hashes, e[has]]
        owners = np.r_[owners, has]
    hashes = (hashes >> np.uint64(32)) ^ (hashes & np.uint64(0xFFFFFFFF))
    order = np.lexsort((hashes, owners))
    hashes, owners = hashes[order], owners[order]
    keep = np.r_[True, (hashes[1:] != hashes[:-1]) | (owners[1:] != owners[:-1])]
    hashes, owners = hashes[keep], owners[keep]
    return hashes.astype(np.uint64), np.bincount(owners, minlength=len(texts)).astype(np.int64)


def minhash(hashes: np.ndarray, lengths: np.ndarray, num_perm: int, seed: int = 1,
            chunk: int = 2048) -> np.ndarray:  # fmt: skip
    """MinHash signatures (Broder, 1997) of the shingle sets given as (hashes, lengths), with
    multiply-shift hash functions; a row of zeros marks a set with no shingles."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
    out = np.zeros((len(lengths), num_perm), dtype=np.uint32)
    starts = np.cumsum(lengths) - lengths
    shift = np.uint64(32)
    row = 0
    while row < len(lengths):
        hi = row
        total = 0
        while hi < len(lengths) and (hi == row or total + lengths[hi] <= chunk):
            total += int(lengths[hi])
            hi += 1
        seg = slice(int(starts[row]), int(starts[row]) + total)
        values = ((hashes[seg, None] * a[None, :] + b[None, :]) >> shift).astype(np.uint32)
        present = np.flatnonzero(lengths[row:hi] > 0)
        if len(present):
            offsets = (starts[row:hi] - starts[row])[present]
            out[row + present] = np.minimum.reduceat(values, offsets, axis=0)
            out[row + present] = np.maximum(out[row + present], 1)
        row = hi
    return out


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands and rows per band minimising the summed false-positive and false-negative areas
    of the S-curve 1 - (1 - s^r)^b around ``threshold`` (as datasketch chooses them)."""
    best, best_err = (1, num_perm), np.inf
    lo = np.linspace(0, threshold, 200)
    hi = np.linspace(threshold, 1, 200)
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        fp = np.trapezoid(1 - (1 - lo**rows) ** bands, lo)
        fn = np.trapezoid((1 - hi**rows) ** bands, hi)
        if fp + fn < best_err:
            best, best_err = (bands, rows), fp + fn
    return best


@dataclass(slots=True)
class DedupResult:
    """Which records survive and, for each dropped one, the id it duplicates."""

    keep: np.ndarray  # bool, one per record
    duplicate_of: list[str | None]
    reasons: list[str | None]

    @property
    def clusters(self) -> int:
        return int(sum(1 for d in self.duplicate_of if d is not None))


def components(edges: np.ndarray, n: int) -> np.ndarray:
    """Connected components of ``edges`` (index pairs below ``n``): each index's label is the
    smallest index of its component. Edges hook each larger root under the smaller one and
    pointer jumping flattens the trees, so the rounds grow with the log of a cluster's size."""
    label = np.arange(n)
    a, b = edges[:, 0], edges[:, 1]
    while True:
        ra, rb = label[a], label[b]
        moved = ra != rb
        if not moved.any():
            return label
        hi, lo = np.maximum(ra, rb)[moved], np.minimum(ra, rb)[moved]
        np.minimum.at(label, hi, lo)
        while True:  # point every index at its root
            jumped = label[label]
            if (jumped == label).all():
                break
            label = jumped


def cluster_keepers(
    edges: np.ndarray, cost: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, keepers): every position that appears in ``edges`` and the position kept for its
    connected cluster, the lowest ``cost(rows)`` there, ties by position."""
    if not len(edges):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nodes, inverse = np.unique(edges, return_inverse=True)
    labels = components(inverse.reshape(edges.shape), len(nodes))
    order = np.lexsort((nodes, np.asarray(cost(nodes), dtype=np.float64), labels))
    first = np.r_[True, labels[order][1:] != labels[order][:-1]]
    keeper = np.empty(len(nodes), dtype=np.int64)
    keeper[labels[order][first]] = nodes[order][first]
    return nodes, keeper[labels]


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For keys sorted by (band, key, pos): the indices j whose row shares (band, key) with row
    j - 1, and for each index the start of its run."""
    band, key = keys["band"], keys["key"]
    new = np.r_[True, (band[1:] != band[:-1]) | (key[1:] != key[:-1])]
    start = np.maximum.accumulate(np.where(new, np.arange(len(keys)), 0))
    return np.flatnonzero(~new), start


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
        max_df: kept so that recipes setting it still load; it has no effect since a shared
            instruction template became one shingle (no boilerplate cut-off is needed, and one
            learned per batch made the result depend on batching).
        prefer: which member represents a cluster: the ``first``, the most ``fluent`` (lowest
            bits per character under a character model of the data), or the best ``score``.
        score: the score to rank by when ``prefer`` is ``score``; ``largest`` says which way.
        embedder: a :class:`thresher.core.embedding.Embedder` (semantic).
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
        """Cluster ``records`` and keep one representative per cluster.

        A job's path in one partition: :meth:`rows`, :meth:`keys`, :meth:`edges`, then
        :func:`cluster_keepers` (positions are the records' indices here).
        """
        n = len(records)
        rows = self.rows(records, self.costs(records), np.arange(n))
        keys = np.sort(self.keys(rows), order=["band", "key", "pos"])
        members, keepers = cluster_keepers(self.edges(keys, rows.__getitem__),
                                           lambda p: rows["cost"][p])  # fmt: skip
        best = np.arange(n)
        best[members] = keepers
        keep = best == np.arange(n)
        duplicate_of: list[str | None] = [None] * n
        reasons: list[str | None] = [None] * n
        for i in np.flatnonzero(~keep).tolist():
            duplicate_of[i] = records[int(best[i])].id
            reasons[i] = f"{self.method}_duplicate: duplicate of {duplicate_of[i]}"
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

    def costs(self, records: Sequence[Record], *, fit_missing: bool = True) -> np.ndarray:
        """Rank cost of each record (lower is kept), a function of the record alone.

        ``first``: none (the earliest copy wins). ``score``: the named score. ``fluent``: a
        ``*.fluency`` score (bits per character under the data's character model, written by
        a ``quality_rules`` step) or the one named by ``score``; when no record has one and
        ``fit_missing``, a character model of ``records`` themselves prices them (the whole
        input, in memory). Missing values rank last, by position.
        """
        n = len(records)
        if self.prefer == "first" or not n:
            return np.zeros(n)
        name = self.score
        if self.prefer == "fluent" and name is None:
            name = next((k for r in records for k in r.scores if k.endswith(".fluency")), None)
            if name is None:
                if not fit_missing:
                    return np.full(n, np.inf)
                texts = ["\n".join(_parts(r)[1])[:FLUENCY_CHARS] for r in records]
                model = CharNgramLM(fold_case=False).fit([t for t in texts if t] or ["a"])
                return np.nan_to_num(model.bits_per_char(texts), nan=np.inf)
        values = np.array([r.scores.get(name or "", np.nan) for r in records])
        if self.prefer == "fluent":
            return np.nan_to_num(values, nan=np.inf)
        return np.nan_to_num(-values if self.largest else values, nan=np.inf)

    # --- one path: rows, keys, edges (then cluster_keepers) -------------------------------

    def rows(self, records: Sequence[Record], cost: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """One row per record: its position, rank ``cost`` (lower is kept), id and signature:
        a 52-bit hash of its normalised text (exact); a MinHash signature of the word shingles
        of its input and responses plus one shingle for its template, then one of its answers
        alone (minhash); or its embedding (semantic). A row depends on its own record only."""
        if self.method == "exact":
            sig: np.ndarray = np.array([_exact_key(r) for r in records], dtype=np.uint64)
        elif self.method == "minhash":
            parts = [_parts(r) for r in records]
            extra = [zlib.crc32(normalise(t).encode()) + 1 if t.strip() else 0 for t, _ in parts]
            # The content and the answers, normalised from their parts (each response once).
            content = [normalise_lines(p) for _, p in parts]
            hashes, lengths = shingle_sets(content, self.ngram, extra, normalised=True)
            answers = [normalise_lines([t.response for t in turns(r)]) for r in records]
            a_hashes, a_lengths = shingle_sets(answers, self.ngram, normalised=True)
            sig = np.column_stack([minhash(hashes, lengths, self.num_perm),
                                   minhash(a_hashes, a_lengths, ANSWER_PERM, seed=2)])  # fmt: skip
        else:
            sig = self.embedder.encode([record_text(r) for r in records]).astype(np.float32)
        fields = [("pos", "<i8"), ("cost", "<f8"), ("id", f"S{ID_BYTES}")]
        out = np.zeros(len(records), dtype=[*fields, ("sig", sig.dtype, sig.shape[1:])])
        out["pos"], out["cost"], out["sig"] = pos, cost, sig
        out["id"] = [r.id.encode("utf-8")[:ID_BYTES] for r in records]
        return out

    def keys(self, rows: np.ndarray) -> np.ndarray:
        """The keys rows meet under: their hash (exact), one per LSH band of every row with
        shingles (minhash), or one key shared by all (semantic: every pair is compared)."""
        if self.method != "minhash":
            out = np.zeros(len(rows), dtype=KEY_DTYPE)
            out["pos"] = rows["pos"]
            if self.method == "exact":
                out["key"] = rows["sig"]
            return out
        sig = rows["sig"][:, : self.num_perm]
        valid = sig.any(axis=1)  # rows of zeros have no shingles: never duplicates
        bands, width = lsh_params(self.threshold, self.num_perm)
        mult = np.random.default_rng(7).integers(1, 2**63, width, dtype=np.uint64) | np.uint64(1)
        n = int(valid.sum())
        out = np.zeros(n * bands, dtype=KEY_DTYPE)
        for band in range(bands):
            block = sig[valid, band * width : (band + 1) * width].astype(np.uint64)
            part = out[band * n : (band + 1) * n]
            part["band"], part["pos"] = band, rows["pos"][valid]
            part["key"] = (block * mult[None, :]).sum(axis=1, dtype=np.uint64)
        return out

    def edges(self, keys: np.ndarray, lookup: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Pairs of positions that are duplicates, from keys sorted by (band, key, pos) with all
        rows of each key present; ``lookup(positions)`` gives their :meth:`rows`.

        Exact: every row with the first of its key. Minhash: within a band's bucket, each row
        with the one before it and with the bucket's first (as a union-find needs), kept when
        the signatures and the answers' signatures both agree on ``threshold`` of their
        hashes. Semantic: cosine at least ``threshold``.
        """
        pos = keys["pos"]
        if self.method == "semantic":
            vectors = lookup(pos)["sig"]
            return pos[np.array(self._semantic_pairs_from(vectors), dtype=np.int64).reshape(-1, 2)]
        same, start = _runs(keys)
        if self.method == "exact":
            return np.column_stack([pos[start[same]], pos[same]])
        after = np.column_stack([pos[same - 1], pos[same]])
        pairs = np.unique(np.r_[after, np.column_stack([pos[start[same]], pos[same]])], axis=0)
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        if not len(pairs):
            return pairs
        nodes = np.unique(pairs)
        sig = lookup(nodes)["sig"]
        at = np.searchsorted(nodes, pairs)
        agree = np.zeros(len(pairs), dtype=bool)
        for lo in range(0, len(pairs), CONFIRM_CHUNK):
            a, b = sig[at[lo : lo + CONFIRM_CHUNK, 0]], sig[at[lo : lo + CONFIRM_CHUNK, 1]]
            # Two questions on one passage share most shingles; duplicates share the answer.
            full = np.mean(a[:, : self.num_perm] == b[:, : self.num_perm], axis=1)
            answer = np.mean(a[:, self.num_perm :] == b[:, self.num_perm :], axis=1)
            agree[lo : lo + CONFIRM_CHUNK] = (full >= self.threshold) & (answer >= self.threshold)
        return pairs[agree]

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
