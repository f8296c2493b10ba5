"""Readers and writers: jsonl (plain or gzip), parquet and `datasets` folders, sharded and lossless.

Reading is split into shards (byte ranges of a plain jsonl file cut at line starts, row-group
ranges of a parquet file, row ranges of a `datasets` folder), so one large file can be read by
several workers. Every row gets a position ``pos = file_index << 40 | row_index`` that is the
same whichever executor reads it: positions, not reading order, define a job's results.
Bad rows never vanish: each becomes a :class:`Reject` with its file and line.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thresher.core.errors import InputError, NotFoundError
from thresher.core.record import Record
from thresher.selection.formats import row_to_record
from thresher.selection.recipe import InputSpec

try:  # a speed-up only: see _loads
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson ships with the selection extra
    _orjson = None

POS_SHIFT = 40
_SCAN = 8 * 1024 * 1024


@dataclass(frozen=True)
class Shard:
    """A contiguous piece of one input: bytes [start, end) for jsonl, rows [start, end) else."""

    index: int
    file_index: int
    path: str
    format: str
    start: int
    end: int
    first_row: int


@dataclass(frozen=True)
class Reject:
    """A row that could not be read or mapped, with where it was and why."""

    source: str
    line: int
    error: str
    raw: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "line": self.line, "error": self.error, "raw": self.raw}


@dataclass
class ReadBatch:
    """Up to ``batch_size`` records of one shard, the rows rejected among them, and a stable key."""

    key: str
    records: list[Record]
    rejects: list[Reject] = field(default_factory=list)


def file_format(path: Path, declared: str) -> str:
    """The format of ``path``: the declared one, else from its name or folder layout."""
    if declared != "auto":
        return declared
    name = path.name.lower()
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return "hf"
        raise InputError(
            f"{path} is a folder but not a `datasets` save_to_disk folder.", field="inputs.path"
        )
    if name.endswith((".jsonl.gz", ".json.gz", ".ndjson.gz")):
        return "jsonl.gz"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise InputError(
        f"Cannot tell the format of {path}; set 'format' to jsonl, jsonl.gz, parquet or hf.",
        field="inputs.format",
    )


def plan_shards(paths: list[Path], formats: list[str], shard_bytes: int) -> list[Shard]:
    """Cut every input into shards (in input order, so positions stay ordered)."""
    shards: list[Shard] = []
    for file_index, (path, fmt) in enumerate(zip(paths, formats, strict=True)):
        if not path.exists():
            raise NotFoundError(f"Input {str(path)!r} does not exist.", field="inputs.path")
        pieces = _PLANNERS[fmt](path, shard_bytes)
        for start, end, first_row in pieces:
            shards.append(Shard(len(shards), file_index, str(path), fmt, start, end, first_row))
    return shards


def _plan_jsonl(path: Path, shard_bytes: int) -> list[tuple[int, int, int]]:
    size = path.stat().st_size
    cuts = [0]
    with path.open("rb") as fh:
        while cuts[-1] + shard_bytes < size:
            fh.seek(cuts[-1] + shard_bytes)
            fh.readline()  # move to the next line start
            if fh.tell() >= size:
                break
            cuts.append(fh.tell())
        cuts.append(size)
        # Line numbers at each cut, counted at C speed: messages and positions need them.
        rows, line, offset = [0], 0, 0
        fh.seek(0)
        for cut in cuts[1:-1]:
            while offset < cut:
                chunk = fh.read(min(_SCAN, cut - offset))
                line += chunk.count(b"\n")
                offset += len(chunk)
            rows.append(line)
    return [(cuts[i], cuts[i + 1], rows[i]) for i in range(len(cuts) - 1)]


def _plan_whole(path: Path, shard_bytes: int) -> list[tuple[int, int, int]]:
    return [(0, -1, 0)]  # gzip cannot seek: one shard per file


def _plan_parquet(path: Path, shard_bytes: int) -> list[tuple[int, int, int]]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    pieces, start, size = [], 0, 0
    first = 0
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        if size >= shard_bytes or g == meta.num_row_groups - 1:
            pieces.append((start, g + 1, first))
            first += sum(meta.row_group(i).num_rows for i in range(start, g + 1))
            start, size = g + 1, 0
    return pieces or [(0, 0, 0)]


def _plan_hf(path: Path, shard_bytes: int) -> list[tuple[int, int, int]]:
    n = len(_load_hf(path))
    step = max(1, shard_bytes // 1024)  # about 1 KB a row
    return [(a, min(n, a + step), a) for a in range(0, n, step)] or [(0, 0, 0)]


_PLANNERS = {
    "jsonl": _plan_jsonl,
    "jsonl.gz": _plan_whole,
    "parquet": _plan_parquet,
    "hf": _plan_hf,
}


def _load_hf(path: Path) -> Any:
    from thresher.core.errors import require

    datasets = require("datasets", "selection")
    return datasets.load_from_disk(str(path)).with_format("arrow")


def _lines(shard: Shard) -> Iterator[tuple[int, bytes]]:
    if shard.format == "jsonl.gz":
        with gzip.open(shard.path, "rb") as fh:
            yield from enumerate(fh)
        return
    with open(shard.path, "rb") as fh:
        fh.seek(shard.start)
        offset, line = shard.start, shard.first_row
        while offset < shard.end:
            raw = fh.readline()
            if not raw:
                break
            offset += len(raw)
            yield line, raw
            line += 1


def _loads(text: str) -> Any:
    """orjson when installed (several times faster); the standard parser has the last word, so
    what is accepted and the error messages do not depend on it."""
    if _orjson is not None:
        try:
            return _orjson.loads(text)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(text)


def _json_rows(
    shard: Shard, wanted: Callable[[int], bool] | None = None
) -> Iterator[tuple[int, Any, str | None, str]]:
    """(row index, parsed row or None, error, raw text) for every non-blank, wanted line."""
    base = shard.file_index << POS_SHIFT
    for line, raw in _lines(shard):
        if wanted is not None and not wanted(base | line):
            continue  # not parsing rows nobody needs is most of a late pass's speed
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield (
                line,
                None,
                f"not UTF-8 ({exc.reason} at byte {exc.start})",
                raw.decode("utf-8", "replace"),
            )
            continue
        try:
            yield line, _loads(text), None, text
        except json.JSONDecodeError as exc:
            yield line, None, f"bad JSON ({exc.msg} at column {exc.colno})", text


def _table_rows(shard: Shard) -> Iterator[tuple[int, Any, str | None, str]]:
    if shard.format == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(shard.path)
        groups = list(range(shard.start, shard.end))
        batches = pf.iter_batches(batch_size=4096, row_groups=groups) if groups else iter(())
    else:
        table = _load_hf(Path(shard.path))[shard.start : shard.end]
        batches = iter(table.to_batches(max_chunksize=4096))
    row = shard.first_row
    for batch in batches:
        for item in batch.to_pylist():
            yield row, item, None, ""
            row += 1


def read_shard(
    shard: Shard,
    spec: InputSpec,
    batch_size: int,
    *,
    strict: bool = False,
    wanted: Callable[[int], bool] | None = None,
) -> Iterator[ReadBatch]:
    """Stream a shard as batches of records; bad rows become rejects (or errors if strict).

    ``wanted(pos)`` lets a caller skip rows it does not need (jsonl rows are then not parsed).
    """
    if shard.format.startswith("jsonl"):
        rows = _json_rows(shard, wanted)
    else:
        rows = _table_rows(shard)
    stem = Path(shard.path).name
    batch = ReadBatch(f"{shard.index:05d}-00000", [])
    count = 0
    for line, row, error, raw in rows:
        if error is None:
            try:
                batch.records.append(
                    row_to_record(
                        row,
                        shape=spec.shape,
                        text_field=spec.text_field,
                        id_field=spec.id_field,
                        default_id=f"{stem}:{line + 1}",
                        pos=(shard.file_index << POS_SHIFT) | line,
                        source=shard.path,
                        line=line + 1,
                    )
                )
            except InputError as exc:
                error = str(exc)
                raw = raw or json.dumps(row, ensure_ascii=False, default=str)
        if error is not None:
            if strict:
                raise InputError(
                    f"{shard.path}:{line + 1}: {error} (drop --strict to count and "
                    "skip bad rows instead)",
                    field="inputs",
                )
            batch.rejects.append(Reject(shard.path, line + 1, error, raw[:2000]))
        if len(batch.records) + len(batch.rejects) >= batch_size:
            yield batch
            count += 1
            batch = ReadBatch(f"{shard.index:05d}-{count:05d}", [])
    if batch.records or batch.rejects:
        yield batch


def read_records(
    spec: InputSpec, *, base: Path | None = None, batch_size: int = 1000, strict: bool = False
) -> Iterator[ReadBatch]:
    """Stream one input (used for auxiliary files such as DSIR targets)."""
    path = Path(spec.path) if base is None or Path(spec.path).is_absolute() else base / spec.path
    fmt = file_format(path, spec.format) if path.exists() else spec.format
    for shard in plan_shards([path], [fmt], 1 << 62):
        yield from read_shard(shard, spec, batch_size, strict=strict)

