"""The demonstration pool: records, their embeddings and a faiss index, persisted to a folder."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from thresher.core.embedding import Embedder
from thresher.core.errors import ConfigError, InputError, NotFoundError
from thresher.core.record import Record
from thresher.prompting.index import IndexConfig, VectorIndex

FORMAT_VERSION = 1
LABEL_KEY = "label"
OUTPUT_KEY = "output"


def demonstration(
    id: str, text: str, label: str | None = None, output: str | None = None, **metadata: Any
) -> Record:
    """A pool record: ``text`` is the input; ``label`` or ``output`` is what it demonstrates."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(
            f"Record {id!r} has empty text; give the demonstration input.", field="text"
        )
    meta = dict(metadata)
    if label is not None:
        meta[LABEL_KEY] = str(label)
    if output is not None:
        meta[OUTPUT_KEY] = str(output)
    return Record(id=id, text=text, metadata=meta)


def record_label(record: Record) -> str | None:
    value = record.metadata.get(LABEL_KEY)
    return None if value is None else str(value)


def record_output(record: Record) -> str | None:
    value = record.metadata.get(OUTPUT_KEY)
    return None if value is None else str(value)


class Pool:
    """Demonstration candidates, embedded in batches and indexed for inner-product search.

    Args:
        embedder: encodes record texts and queries into unit vectors.
        index: an :class:`IndexConfig` or a kind (``auto``, ``flat``, ``ivf``, ``hnsw``).
        batch_size: texts per embedding batch.
        progress: show a progress bar while embedding.

    Learned attributes (after :meth:`fit`): ``records_``, ``embeddings_`` (float32, one row per
    record), ``keys_`` (the stable int64 faiss id of each row, increasing), ``index_``,
    ``version_`` (bumped by every change, so retrievers know when to refit).
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        index: IndexConfig | str = "auto",
        batch_size: int = 256,
        progress: bool = False,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.batch_size = batch_size
        self.progress = progress

    # -- building -----------------------------------------------------------------------------

    def fit(self, records: Iterable[Record], embeddings: np.ndarray | None = None) -> Pool:
        """Embed ``records`` (unless their unit ``embeddings`` are given) and build the index."""
        records = list(records)
        if not records:
            raise InputError("A pool needs at least one record.", field="records")
        self._check_new(records, existing=set())
        config = self.index if isinstance(self.index, IndexConfig) else IndexConfig(kind=self.index)  # type: ignore[arg-type]
        self.config_ = config
        self.records_ = records
        self.embeddings_ = self._vectors(records, embeddings)
        self.keys_ = np.arange(len(records), dtype=np.int64)
        self.next_key_ = len(records)
        self.index_ = VectorIndex(config, self.embedder.dim).build(self.embeddings_, self.keys_)
        self.version_ = 0
        self._reindex_rows()
        return self

    def add(self, records: Iterable[Record], embeddings: np.ndarray | None = None) -> Pool:
        """Embed and index new records without rebuilding what is there."""
        records = list(records)
        if not records:
            return self
        self._check_new(records, existing=set(self.row_of_))
        vectors = self._vectors(records, embeddings)
        keys = np.arange(self.next_key_, self.next_key_ + len(records), dtype=np.int64)
        self.index_.add(vectors, keys)
        self.records_.extend(records)
        self.embeddings_ = np.vstack([self.embeddings_, vectors])
        self.keys_ = np.concatenate([self.keys_, keys])
        self.next_key_ += len(records)
        self.version_ += 1
        self._reindex_rows()
        return self

    def remove(self, ids: Iterable[str]) -> Pool:
        """Drop records by id; the index deletes their vectors in place."""
        ids = list(dict.fromkeys(ids))
        missing = [i for i in ids if i not in self.row_of_]
        if missing:
            raise NotFoundError(f"No records with ids {missing[:5]} in the pool.", field="ids")
        if len(ids) >= len(self.records_):
            raise InputError("Removing every record would leave the pool empty.", field="ids")
        rows = np.array([self.row_of_[i] for i in ids], dtype=np.int64)
        self.index_.remove(self.keys_[rows])
        keep = np.ones(len(self.records_), dtype=bool)
        keep[rows] = False
        self.records_ = [r for r, k in zip(self.records_, keep, strict=True) if k]
        self.embeddings_ = self.embeddings_[keep]
        self.keys_ = self.keys_[keep]
        if len(self.index_.tombstones) > max(64, len(self.records_) // 4):
            # HNSW cannot delete; once a quarter is dead, a rebuild is cheaper than skipping.
            self.index_.build(self.embeddings_, self.keys_)
        self.version_ += 1
        self._reindex_rows()
        return self

    def _vectors(self, records: Sequence[Record], embeddings: np.ndarray | None) -> np.ndarray:
        if embeddings is None:
            return self.embed([r.content for r in records])
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        if vectors.shape != (len(records), self.embedder.dim):
            raise InputError(
                f"embeddings have shape {vectors.shape}; expected ({len(records)}, "
                f"{self.embedder.dim}), one unit vector per record.",
                field="embeddings",
            )
        return vectors

    def _check_new(self, records: Sequence[Record], existing: set[str]) -> None:
        seen = set(existing)
        for i, r in enumerate(records):
            if not isinstance(r, Record):
                raise InputError(f"records[{i}] is not a Record.", field=f"records[{i}]")
            if r.id in seen:
                raise InputError(
                    f"Duplicate record id {r.id!r}; ids must be unique in a pool.",
                    field=f"records[{i}].id",
                )
            if not r.content.strip():
                raise InputError(f"Record {r.id!r} has empty text.", field=f"records[{i}].text")
            seen.add(r.id)

    def _reindex_rows(self) -> None:
        self.row_of_ = {r.id: i for i, r in enumerate(self.records_)}
        self.record_labels_ = np.array([record_label(r) for r in self.records_], dtype=object)
        self.labels_ = sorted({x for x in self.record_labels_ if x is not None})

    # -- using --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records_)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts in batches into unit float32 vectors."""
        return self.embedder.encode(list(texts), batch_size=self.batch_size, progress=self.progress)

    def get(self, id: str) -> Record:
        row = self.row_of_.get(id)
        if row is None:
            raise NotFoundError(f"No record {id!r} in the pool.", field="id")
        return self.records_[row]

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (similarities, rows) per query vector; rows of ``records_``, -1 if none."""
        k = min(k, len(self.records_))
        scores, keys = self.index_.search(np.atleast_2d(vectors), k)
        rows = np.searchsorted(self.keys_, keys)
        rows = np.where((keys >= 0) & (rows < len(self.keys_)), rows, -1)
        return scores, rows

    # -- persistence --------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write index, records, embeddings and a JSON config to ``path`` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self.index_.write(str(tmp / "index.faiss"))
        np.save(tmp / "embeddings.npy", self.embeddings_)
        np.save(tmp / "keys.npy", self.keys_)
        with open(tmp / "records.jsonl", "w", encoding="utf-8") as f:
            for r in self.records_:
                row = {"id": r.id, "text": r.text, "messages": r.messages, "metadata": r.metadata}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        config = {
            "format_version": FORMAT_VERSION,
            "embedder": self.embedder.name,
            "dim": self.embedder.dim,
            "batch_size": self.batch_size,
            "index": asdict(self.config_),
            "index_kind": self.index_.kind,
            "tombstones": sorted(self.index_.tombstones),
            "next_key": self.next_key_,
            "version": self.version_,
            "size": len(self.records_),
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder) -> Pool:
        """Load a pool saved by :meth:`save`; the embedder must be the one it was built with."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise NotFoundError(f"No saved pool at {path}.", field="pool")
        config = json.loads((path / "config.json").read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"Pool at {path} has format {config.get('format_version')}; "
                f"this Thresher reads format {FORMAT_VERSION}. Rebuild the pool.",
                field="pool",
            )
        if config["embedder"] != embedder.name or config["dim"] != embedder.dim:
            raise ConfigError(
                f"Pool at {path} was embedded with {config['embedder']!r} (dim {config['dim']}); "
                f"load it with that embedder, not {embedder.name!r}.",
                field="embedder",
            )
        index_config = IndexConfig(**config["index"])
        pool = cls(embedder, index=index_config, batch_size=config["batch_size"])
        pool.config_ = index_config
        with open(path / "records.jsonl", encoding="utf-8") as f:
            pool.records_ = [Record(**json.loads(line)) for line in f]
        pool.embeddings_ = np.load(path / "embeddings.npy")
        pool.keys_ = np.load(path / "keys.npy")
        pool.next_key_ = int(config["next_key"])
        pool.version_ = int(config["version"])
        index = VectorIndex(index_config, embedder.dim, kind=config["index_kind"])
        pool.index_ = index.read(str(path / "index.faiss"))
        pool.index_.tombstones = set(config["tombstones"])
        pool._reindex_rows()
        return pool
