"""Named pools under a data directory, shared by the CLI and the REST API."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from thresher.core.embedding import Embedder
from thresher.core.errors import InputError, NotFoundError
from thresher.core.record import Record
from thresher.prompting.index import IndexConfig
from thresher.prompting.pool import Pool, demonstration
from thresher.prompting.retrievers import BaseRetriever
from thresher.prompting.strategies import get_retriever

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_pool_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            f"Pool name {name!r} is not allowed; use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit.",
            field="name",
        )
    return name


def read_demonstrations(
    path: str | Path,
    *,
    text_field: str = "text",
    label_field: str | None = "label",
    output_field: str | None = "output",
    id_field: str = "id",
) -> Iterator[Record]:
    """Demonstration records from a JSON Lines file (ids default to the line number)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"Input file {path} does not exist.", field="input")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{path}:{n} is not valid JSON ({exc.msg}).", field="input"
                ) from None
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise InputError(
                    f"{path}:{n} has no string field {text_field!r}; pick it with --text-field.",
                    field="text_field",
                )
            label = row.get(label_field) if label_field else None
            output = row.get(output_field) if output_field else None
            yield demonstration(
                str(row.get(id_field, n)), row[text_field], label=label, output=output
            )


class PoolStore:
    """Pools saved under ``root/pools/<name>``, loaded once and kept in memory.

    A store may see another's pools read-only (``shared``, by name): a deployment's pools that
    every tenant reads and none changes. A shared name always means the shared pool; creating,
    adding to or removing from it here is refused.

    Args:
        root: the data directory (``Settings.data_dir``), or one tenant's folder.
        embedder: the embedder, or a function returning it (so a store costs nothing until used).
        index: index config for new pools.
        shared: the store holding the shared pools.
        shared_names: the names of ``shared``'s pools this store reads.
    """

    def __init__(
        self,
        root: str | Path,
        embedder: Embedder | Callable[[], Embedder],
        *,
        index: IndexConfig | str = "auto",
        shared: PoolStore | None = None,
        shared_names: Iterable[str] = (),
    ) -> None:
        self.root = Path(root)
        self._embedder = embedder
        self.index = index
        self.shared = shared
        self.shared_names = frozenset(shared_names)
        self._pools: dict[str, Pool] = {}
        self._retrievers: dict[tuple[str, str], BaseRetriever] = {}
        self._lock = threading.RLock()

    def _elsewhere(self, name: str) -> PoolStore | None:
        """The store that holds ``name`` when it is a shared pool seen from another store."""
        if name in self.shared_names and self.shared is not None and self.shared is not self:
            return self.shared
        return None

    def _writable(self, name: str) -> None:
        if name in self.shared_names:
            raise InputError(
                f"Pool {name!r} is shared read-only in this deployment "
                "(THRESHER_SHARED_POOLS); give your pool another name.",
                field="name",
            )

    @property
    def embedder(self) -> Embedder:
        if not isinstance(self._embedder, Embedder):
            self._embedder = self._embedder()
        return self._embedder

    def path(self, name: str) -> Path:
        return self.root / "pools" / check_pool_name(name)

    def names(self) -> list[str]:
        """The pools this store reads: its own and the shared ones that exist."""
        folder = self.root / "pools"
        own = (
            {p.name for p in folder.iterdir() if (p / "config.json").exists()}
            if folder.is_dir()
            else set()
        )
        if self.shared is not None and self.shared is not self:
            own = {n for n in own if n not in self.shared_names}
            own |= {n for n in self.shared_names if self.shared.exists(n)}
        return sorted(own)

    def exists(self, name: str) -> bool:
        other = self._elsewhere(name)
        if other is not None:
            return other.exists(name)
        return (self.path(name) / "config.json").exists()

    def create(self, name: str, records: Iterable[Record], *, replace: bool = False) -> Pool:
        """Build and save a new pool (``replace=True`` overwrites one of the same name)."""
        self._writable(check_pool_name(name))
        with self._lock:
            if self.exists(name) and not replace:
                raise InputError(
                    f"Pool {name!r} already exists; add records to it, or replace it.",
                    field="name",
                )
            pool = Pool(self.embedder, index=self.index, progress=True).fit(records)
            pool.save(self.path(name))
            self._pools[name] = pool
            self._retrievers = {k: v for k, v in self._retrievers.items() if k[0] != name}
            return pool

    def get(self, name: str) -> Pool:
        """The pool called ``name``; :class:`NotFoundError` if there is none."""
        other = self._elsewhere(name)
        if other is not None:
            return other.get(name)
        with self._lock:
            if name not in self._pools:
                if not self.exists(name):
                    known = ", ".join(self.names()) or "none yet"
                    raise NotFoundError(
                        f"No pool named {name!r} (pools: {known}); create it first.", field="pool"
                    )
                self._pools[name] = Pool.load(self.path(name), self.embedder)
            return self._pools[name]

    def add(self, name: str, records: Iterable[Record]) -> Pool:
        """Add records to a saved pool and save it again."""
        self._writable(name)
        with self._lock:
            pool = self.get(name).add(records)
            pool.save(self.path(name))
            return pool

    def remove(self, name: str, ids: Iterable[str]) -> Pool:
        self._writable(name)
        with self._lock:
            pool = self.get(name).remove(ids)
            pool.save(self.path(name))
            return pool

    def retriever(self, name: str, method: str, **options: Any) -> BaseRetriever:
        """A fitted retriever for a pool, kept so BM25 and VoteK state is built once."""
        other = self._elsewhere(name)
        if other is not None:
            return other.retriever(name, method, **options)
        with self._lock:
            pool = self.get(name)
            key = (name, method)
            if options or key not in self._retrievers:
                fitted = get_retriever(method, **options).fit(pool)
                if options:
                    return fitted
                self._retrievers[key] = fitted
            return self._retrievers[key]
