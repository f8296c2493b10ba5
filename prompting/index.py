"""faiss inner-product indexes keyed by stable int64 ids, chosen by pool size.

Exact search (``IndexFlatIP``) is the default; above ``approximate_above`` vectors the pool
switches to IVF (Jegou et al. 2011, inverted file with a k-means coarse quantizer) or HNSW
(Malkov and Yashunin 2018). Every kind answers with the caller's own ids, so records can be
added and removed online: flat and IVF remove natively, HNSW (which cannot delete) keeps a set
of tombstones that searches skip.

Unset search parameters are derived from the pool size, not fixed: IVF uses ``sqrt(n)`` lists
and probes ``3 * sqrt(nlist)`` of them (about ``3 * n ** 0.25``), so the share of the pool a
query scans shrinks slowly as the pool grows while recall stays high; HNSW searches with
``efSearch = max(ef_search_floor, 8 * k)`` candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from thresher.core.errors import ConfigError, require

IndexKind = Literal["auto", "flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "ivf", "hnsw")
EF_SEARCH_FLOOR = 64


def _faiss() -> Any:
    return require("faiss", "prompting")


@dataclass
class IndexConfig:
    """How to index a pool; ``kind="auto"`` picks flat below ``approximate_above``, else IVF."""

    kind: IndexKind = "auto"
    approximate_above: int = 20_000
    approximate_kind: Literal["ivf", "hnsw"] = "ivf"
    nlist: int | None = None  # IVF lists; default sqrt(n)
    nprobe: int | None = None  # IVF lists probed; default 3 * sqrt(nlist)
    hnsw_m: int = 32
    ef_search: int | None = None  # HNSW candidates; default max(64, 8 * k) per search
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
        for name in ("nlist", "nprobe", "ef_search"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}.", field=name)

    def resolve(self, n: int) -> str:
        """The concrete kind for a pool of ``n`` vectors."""
        if self.kind != "auto":
            return self.kind
        return self.approximate_kind if n >= self.approximate_above else "flat"

    def resolve_nlist(self, n: int) -> int:
        """IVF lists for ``n`` vectors: ``sqrt(n)``, capped so each list trains on 39+ points."""
        nlist = self.nlist or max(1, round(math.sqrt(max(n, 1))))
        return max(1, min(nlist, n // 39 if n >= 39 else 1))

    def resolve_nprobe(self, nlist: int) -> int:
        """Lists probed: ``3 * sqrt(nlist)`` unless set (neighbours of a query spread over
        several nearby cells, more of them as cells get smaller)."""
        return max(1, min(nlist, self.nprobe or math.ceil(3 * math.sqrt(nlist))))

    def resolve_ef_search(self, k: int) -> int:
        """HNSW candidate list for a top-``k`` search: at least ``8 * k`` unless set."""
        return self.ef_search or max(EF_SEARCH_FLOOR, 8 * k)


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
            nlist = self.config.resolve_nlist(n)
            quantizer = faiss.IndexFlatIP(self.dim)
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = vectors
            if n > 64 * nlist:  # training on a sample keeps the build time bounded
                rng = np.random.default_rng(0)
                sample = vectors[rng.choice(n, 64 * nlist, replace=False)]
            ivf.train(np.ascontiguousarray(sample))
            ivf.nprobe = self.config.resolve_nprobe(nlist)
            self.index = ivf
        else:
            hnsw = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = self.config.ef_construction
            self.index = faiss.IndexIDMap2(hnsw)
        if n:
            self.add(vectors, keys)
        return self

    def params(self) -> dict[str, int]:
        """The search parameters in force (``ef_search`` is the one a top-10 search uses)."""
        if self.kind == "ivf":
            ivf = _faiss().extract_index_ivf(self.index)
            return {"nlist": int(ivf.nlist), "nprobe": int(ivf.nprobe)}
        if self.kind == "hnsw":
            return {
                "M": self.config.hnsw_m,
                "ef_construction": self.config.ef_construction,
                "ef_search": self.config.resolve_ef_search(10),
            }
        return {}

    def tune(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the search-time parameters of a built index (recall vs speed)."""
        if nprobe is not None and self.kind == "ivf":
            self.config.nprobe = nprobe
            ivf = _faiss().extract_index_ivf(self.index)
            ivf.nprobe = self.config.resolve_nprobe(int(ivf.nlist))
        if ef_search is not None and self.kind == "hnsw":
            self.config.ef_search = ef_search

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
        params = None
        if self.kind == "hnsw":
            faiss = _faiss()
            params = faiss.SearchParametersHNSW(efSearch=self.config.resolve_ef_search(fetch))
        scores, keys = self.index.search(queries, fetch, params=params)
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
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = self.config.resolve_nprobe(int(ivf.nlist))
        return self


def _pad(scores: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if keys.shape[1] >= k:
        return scores[:, :k], keys[:, :k]
    extra = k - keys.shape[1]
    return (
        np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf),
        np.pad(keys, ((0, 0), (0, extra)), constant_values=-1),
    )
