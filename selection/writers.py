"""Writers: kept rows go back in their original form (every field kept), written atomically.

Each writer writes under a temporary name in the target folder and renames it into place on
``commit``; a crash leaves either the old file or none, never half a file. Jobs write one part
per input shard; :func:`join_parts` makes one file of them when a job asks for one.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from thresher.core.files import atomic_path, temp_name

Row = dict[str, Any]


class RowWriter(Protocol):
    """Append rows, then commit (rename into place) or abort (delete the temporary)."""

    def write(self, rows: list[Row]) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


def _dumps(row: Row) -> str:
    return json.dumps(row, ensure_ascii=False, default=str)


class JsonlWriter:
    """JSON Lines, optionally gzip-compressed with a fixed mtime (so reruns are byte-identical)."""

    def __init__(self, path: Path, *, compress: bool = False) -> None:
        self.path = path
        self.tmp = temp_name(path)
        raw = open(self.tmp, "wb")  # noqa: SIM115 (closed in commit/abort)
        if compress:
            self._raw = raw
            stream: Any = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        else:
            self._raw, stream = None, raw
        self._fh = io.TextIOWrapper(stream, encoding="utf-8", newline="\n")

    def write(self, rows: list[Row]) -> None:
        for row in rows:
            self._fh.write(_dumps(row))
            self._fh.write("\n")

    def commit(self) -> None:
        self._close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._close()
        self.tmp.unlink(missing_ok=True)

    def _close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        if self._raw is not None and not self._raw.closed:
            self._raw.close()


class ParquetWriter:
    """Parquet through pyarrow; the original columns keep the input's arrow types when known."""

    def __init__(self, path: Path, *, schema: Any = None) -> None:
        self.path = path
        self.tmp = temp_name(path)
        self.schema = schema
        self._writer: Any = None
        # Fields holding a dict of floats whose keys are known for the whole job (the scores):
        # written as a struct of every key (null where a row lacks one), or left out when
        # there are no keys (Parquet cannot store a struct with no fields).
        self.float_structs: dict[str, list[str]] = {}

    def _table(self, rows: list[Row]) -> Any:
        import pyarrow as pa

        known = [f for f in self.schema or [] if any(f.name in r for r in rows[:1])]
        names = [f.name for f in known]
        extra = [k for k in rows[0] if k not in names]
        columns = {f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in known}
        for k in extra:
            values = [r.get(k) for r in rows]
            if k in self.float_structs:
                keys = self.float_structs[k]
                if keys:
                    kind = pa.struct([(name, pa.float64()) for name in keys])
                    full = [{name: (v or {}).get(name) for name in keys} for v in values]
                    columns[k] = pa.array(full, type=kind)
            else:
                columns[k] = pa.array(values)
        return pa.table(columns)

    def write(self, rows: list[Row]) -> None:
        if not rows:
            return
        import pyarrow.parquet as pq

        table = self._table(rows)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, table.schema)
        self._writer.write_table(table.cast(self._writer.schema))

    def commit(self) -> None:
        if self._writer is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(
                pa.table({}) if self.schema is None else self.schema.empty_table(), self.tmp
            )
        else:
            self._writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)


class HFWriter:
    """A `datasets` ``save_to_disk`` folder, built from a temporary parquet file on commit."""

    def __init__(self, path: Path, *, schema: Any = None) -> None:
        self.path = path
        self.work = temp_name(path)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self._parquet = ParquetWriter(self.work / "rows.parquet", schema=schema)
        self.float_structs = self._parquet.float_structs

    def write(self, rows: list[Row]) -> None:
        self._parquet.write(rows)

    def commit(self) -> None:
        self._parquet.commit()
        save_hf(self.work / "rows.parquet", self.path, self.work)

    def abort(self) -> None:
        self._parquet.abort()
        shutil.rmtree(self.work, ignore_errors=True)


def save_hf(parquet: Path, path: Path, work: Path) -> None:
    """A `datasets` folder at ``path`` from one parquet file (``work``: scratch, removed)."""
    from thresher.core.errors import require

    datasets = require("datasets", "selection")
    ds = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(work / "cache"))
    staged = work / "dataset"
    ds.save_to_disk(str(staged))
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        os.replace(path, old)
    os.replace(staged, path)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


def resolve_format(path: Path, fmt: str) -> str:
    """``fmt``, or for ``auto`` the format the file name says (unknown names get jsonl)."""
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    if name.endswith(".gz"):
        return "jsonl.gz"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "hf" if "." not in name else "jsonl"


def join_parts(parts: list[Path], path: Path, fmt: str) -> None:
    """One file (or `datasets` folder) at ``path`` from ``parts`` in order, atomically: bytes
    joined for JSON Lines (gzip members join into one valid stream), row groups copied under
    one schema for parquet. Memory: one row group."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("jsonl", "jsonl.gz"):
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = temp_name(path) if fmt == "parquet" else temp_name(path) / "rows.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    files = [pq.ParquetFile(p) for p in parts]
    schema = pa.unify_schemas([f.schema_arrow for f in files], promote_options="permissive")
    try:
        with pq.ParquetWriter(target, schema) as writer:
            for f in files:
                for group in range(f.num_row_groups):
                    table = f.read_row_group(group)
                    columns = [table[x.name].cast(x.type) if x.name in table.column_names
                               else pa.nulls(len(table), x.type) for x in schema]  # fmt: skip
                    writer.write_table(pa.Table.from_arrays(columns, schema=schema))
        if fmt == "parquet":
            os.replace(target, path)
        else:
            save_hf(target, path, target.parent)
    finally:
        if fmt == "parquet":
            target.unlink(missing_ok=True)
        else:
            shutil.rmtree(target.parent, ignore_errors=True)


def open_writer(path: Path, fmt: str, *, schema: Any = None) -> RowWriter:
    """A writer for ``fmt`` (``auto`` decides from the file name: :func:`resolve_format`)."""
    fmt = resolve_format(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        return ParquetWriter(path, schema=schema)
    if fmt == "hf":
        return HFWriter(path, schema=schema)
    return JsonlWriter(path, compress=fmt == "jsonl.gz")


def input_schema(path: Path, fmt: str) -> Any:
    """The arrow schema of a parquet or `datasets` input (None for json), for lossless writes."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).schema_arrow
    if fmt == "hf":
        from thresher.core.errors import require

        datasets = require("datasets", "selection")
        return datasets.load_from_disk(str(path)).data.schema
    return None
