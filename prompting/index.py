"""faiss inner-product indexes keyed by stable int64 ids, chosen by pool size.

Exact search (``IndexFlatIP``) is the default; above ``approximate_above`` vectors the pool
switches to IVF (Jegou et al. 2011, inverted file with a k-means coarse quantizer) or HNSW
(Malkov and Yashunin 2018). Every kind answers with the caller's own ids, so records can be
added and removed online: flat and IVF remove natively, HNSW (which cannot delete) keeps a set
of tombstones that searches skip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from core.errors import ConfigError, require

IndexKind = Literal["auto", "flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "ivf", "hnsw")


def _faiss() -> Any:
    return require("faiss", "prompting")


@dataclass
class IndexConfig:
    """How to index a pool; ``kind="auto"`` picks flat below ``approximate_above``, else IVF."""

    kind: IndexKind = "auto"
    approximate_above: int = 50_000
    approximate_kind: Literal["ivf", "hnsw"] = "ivf"
    nlist: int | None = None  # IVF lists; default sqrt(n)
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 64
    ef_construction: int = 80

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ConfigError(
                f"Unknown index kind {self.kind!r}; use one of {INDEX_KINDS}.", field="index"
            )
        if self.approximate_kind not in ("ivf", "hnsw"):
            raise ConfigError(
                f"approximate_kind must be 'ivf' or 'hnsw', got {self.approximate_kind!r}.",
                field="approximate_kind",
            )
        if self.approximate_above < 1:
            raise ConfigError("approximate_above must be at least 1.", field="approximate_above")

    def resolve(self, n: int) -> str:
        """The concrete kind for a pool of ``n`` vectors."""
        if self.kind != "auto":
            return self.kind
        return self.approximate_kind if n >= self.approximate_above else "flat"


@dataclass
class VectorIndex:
    """A faiss index over unit vectors that searches by inner product and returns int64 keys."""

    config: IndexConfig
    dim: int
    kind: str = "flat"
    index: Any = None
    tombstones: set[int] = field(default_factory=set)

    def build(self, vectors: np.ndarray, keys: np.ndarray) -> VectorIndex:
        """(Re)build from scratch over ``vectors`` with ids ``keys``."""
        faiss = _faiss()
        n = len(vectors)
        self.kind = self.config.resolve(n)
        self.tombstones = set()
        if self.kind == "flat":
            self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        elif self.kind == "ivf":
            nlist = self.config.nlist or max(1, int(math.sqrt(max(n, 1))))
            # k-means needs a few dozen points per list to be meaningful.
            nlist = max(1, min(nlist, n // 39 if n >= 39 else 1))
            quantizer = faiss.IndexFlatIP(self.dim)
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = vectors
            if n > 64 * nlist:  # training on a sample keeps the build time bounded
                rng = np.random.default_rng(0)
                sample = vectors[rng.choice(n, 64 * nlist, replace=False)]
            ivf.train(np.ascontiguousarray(sample))
            ivf.nprobe = min(self.config.nprobe, nlist)
            self.index = ivf
        else:
            hnsw = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = self.config.ef_construction
            hnsw.hnsw.efSearch = self.config.ef_search
            self.index = faiss.IndexIDMap2(hnsw)
        if n:
            self.add(vectors, keys)
        return self

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.tombstones)

    def add(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        self.index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(keys, dtype=np.int64)
        )

    def remove(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        if self.kind == "hnsw":
            self.tombstones.update(int(k) for k in keys)
        else:
            self.index.remove_ids(keys)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, keys) per query; missing slots have key -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        fetch = min(k + len(self.tombstones), int(self.index.ntotal))
        if fetch <= 0:
            empty = np.full((len(queries), k), -1, dtype=np.int64)
            return np.full((len(queries), k), -np.inf, dtype=np.float32), empty
        scores, keys = self.index.search(queries, fetch)
        if not self.tombstones:
            return _pad(scores, keys, k)
        dead = np.isin(keys, np.fromiter(self.tombstones, dtype=np.int64))
        out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_k = np.full((len(queries), k), -1, dtype=np.int64)
        for row in range(len(queries)):
            alive = ~dead[row] & (keys[row] >= 0)
            s, kk = scores[row][alive][:k], keys[row][alive][:k]
            out_s[row, : len(s)], out_k[row, : len(kk)] = s, kk
        return out_s, out_k

    def write(self, path: str) -> None:
        _faiss().write_index(self.index, path)

    def read(self, path: str) -> VectorIndex:
        faiss = _faiss()
        self.index = faiss.read_index(path)
        if self.kind == "ivf":
            faiss.extract_index_ivf(self.index).nprobe = self.config.nprobe
        elif self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = self.config.ef_search
        return self


def _pad(scores: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if keys.shape[1] >= k:
        return scores[:, :k], keys[:, :k]
    extra = k - keys.shape[1]
    return (
        np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf),
        np.pad(keys, ((0, 0), (0, extra)), constant_values=-1),
    )
