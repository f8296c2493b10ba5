"""Writers: kept rows go back in their original form (every field kept), written atomically.

Each writer writes under a temporary name in the target folder and renames it into place on
``commit``; a crash leaves either the old file or none, never half a file.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

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
        self.tmp = path.with_name(f".{path.name}.tmp")
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
        self.tmp = path.with_name(f".{path.name}.tmp")
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
        self.work = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self._parquet = ParquetWriter(self.work / "rows.parquet", schema=schema)
        self.float_structs = self._parquet.float_structs

    def write(self, rows: list[Row]) -> None:
        self._parquet.write(rows)

    def commit(self) -> None:
        from thresher.core.errors import require

        datasets = require("datasets", "selection")
        self._parquet.commit()
        ds = datasets.Dataset.from_parquet(
            str(self.work / "rows.parquet"), cache_dir=str(self.work / "cache")
        )
        staged = self.work / "dataset"
        ds.save_to_disk(str(staged))
        old = self.path.with_name(f".{self.path.name}.old")
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(staged, self.path)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)

    def abort(self) -> None:
        self._parquet.abort()
        shutil.rmtree(self.work, ignore_errors=True)


def open_writer(path: Path, fmt: str, *, schema: Any = None) -> RowWriter:
    """A writer for ``fmt`` (``auto`` decides from the file name; unknown names get jsonl)."""
    if fmt == "auto":
        name = path.name.lower()
        if name.endswith(".gz"):
            fmt = "jsonl.gz"
        elif name.endswith((".parquet", ".pq")):
            fmt = "parquet"
        elif "." not in name:
            fmt = "hf"
        else:
            fmt = "jsonl"
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
