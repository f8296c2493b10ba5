"""Grouped steps (deduplication) as a shuffle over files beside the job: map, reduce, cluster.

1. Map (in a pass, per shard): the step's rows (position, cost, id, signature) are written
   sorted by position to ``group-S/rows-SSSSS.npy``, and their keys, sorted by the partition
   their (band, key) hashes to, to ``keys-SSSSS.npy`` with the partitions' offsets beside.
2. Reduce (one task per partition): a partition reads its slice of every shard's keys, so it
   holds every row of each of its keys, sorts them by (band, key, position) and asks the step
   for edges between rows that belong together, looking signatures up by position in the
   shards' row files (memory-mapped: only the rows asked for are read). Edges go to
   ``edges-RRRRR.npy``.
3. Cluster (one task): the edges' connected components, each keeping its lowest (cost,
   position) row; the rows to drop go to ``drops-SSSSS.npz`` for the shard holding them, each
   with the reason naming its keeper's id. The next pass drops them by position.

Memory: a map task holds its shard's rows, a reduce task its partition (every shard's keys
divided by the partition count, which grows with the shard count), the cluster task the edges
and the rows they touch; the driver holds none of them. The result is the step's own
``decide`` over all rows at once: the same edges, so the same clusters and keepers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thresher.core.files import atomic_write_text
from thresher.core.record import Record
from thresher.selection.io import POS_SHIFT, Shard
from thresher.selection.state import pack_strings, save_array, save_npz, unpack_strings

if TYPE_CHECKING:
    from thresher.selection.engine import Job
    from thresher.selection.state import WorkDir

MAX_PARTITIONS = 4096


def plan_partitions(work: WorkDir, step: int, shards: int, workers: int) -> int:
    """The partition count of ``step``'s shuffle, fixed once per job (a resumed job keeps it):
    one per shard, so a partition holds about a shard's worth of keys, and at least one per
    worker."""
    path = work.group_dir(step) / "plan.json"
    if path.exists():
        return int(json.loads(path.read_text())["partitions"])
    count = max(1, min(MAX_PARTITIONS, max(shards, workers)))
    atomic_write_text(path, json.dumps({"partitions": count}))
    return count


def partitions(work: WorkDir, step: int) -> int:
    return int(json.loads((work.group_dir(step) / "plan.json").read_text())["partitions"])


def _partition_of(keys: np.ndarray, count: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = (keys["key"] + keys["band"].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) * \
            np.uint64(0xBF58476D1CE4E5B9)  # fmt: skip
        return ((h ^ (h >> np.uint64(31))) % np.uint64(count)).astype(np.int64)


def write_map_side(work: WorkDir, index: int, step: Any, shard: int, rows: np.ndarray) -> None:
    """Write one shard's rows and partitioned keys for ``step`` (``index`` in the recipe)."""
    folder = work.group_dir(index)
    if (np.diff(rows["pos"]) <= 0).any():
        raise RuntimeError(f"{step.name}: a shard's rows came out of order")
    count = partitions(work, index)
    keys = step.group_keys(rows)
    part = _partition_of(keys, count)
    order = np.argsort(part, kind="stable")
    save_array(folder / f"rows-{shard:05d}.npy", rows)
    save_array(folder / f"keys-{shard:05d}.offsets.npy",
               np.searchsorted(part[order], np.arange(count + 1)))  # fmt: skip
    save_array(folder / f"keys-{shard:05d}.npy", keys[order])


class RowLookup:
    """A grouped step's rows by position, from the shards' memory-mapped row files (one open
    at a time: a job may have thousands)."""

    def __init__(self, folder: Path, shards: list[Shard]) -> None:
        self.folder = folder
        self.starts = np.array([s.file_index << POS_SHIFT | s.first_row for s in shards])
        self.indices = [s.index for s in shards]

    def __call__(self, pos: np.ndarray, field: str | None = None) -> np.ndarray:
        pos = np.asarray(pos, dtype=np.int64)
        if not len(pos):
            return np.zeros(0)
        owner = np.searchsorted(self.starts, pos, side="right") - 1
        order = np.argsort(owner, kind="stable")
        bounds = np.flatnonzero(np.r_[True, np.diff(owner[order]) != 0, True])
        out: np.ndarray | None = None
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            mine = order[lo:hi]
            name = f"rows-{self.indices[owner[mine[0]]]:05d}.npy"
            rows = np.load(self.folder / name, mmap_mode="r")
            table = rows if field is None else rows[field]
            if out is None:
                out = np.empty((len(pos), *table.shape[1:]), dtype=table.dtype)
            out[mine] = table[np.searchsorted(rows["pos"], pos[mine])]
        assert out is not None  # pos is not empty
        return out


def reduce_partition(job: Job, steps: list[Any], item: tuple[int, int]) -> dict[str, Any]:
    """Turn one partition's keys into the step's edges (skipped when already done)."""
    index, part = item
    folder = job.work.group_dir(index)
    out = folder / f"edges-{part:05d}.npy"
    if out.exists():
        return {"edges": len(np.load(out, mmap_mode="r")), "keys": 0}
    pieces = []
    for shard in job.shards:
        path = folder / f"keys-{shard.index:05d}.npy"
        if path.exists():
            bounds = np.load(folder / f"keys-{shard.index:05d}.offsets.npy")
            pieces.append(np.array(np.load(path, mmap_mode="r")[bounds[part] : bounds[part + 1]]))
    keys = np.concatenate(pieces) if pieces else np.zeros(0)
    edges = np.zeros((0, 2), dtype=np.int64)
    if len(keys):
        keys = keys[np.lexsort((keys["pos"], keys["key"], keys["band"]))]
        lookup = RowLookup(folder, job.shards)
        edges = np.asarray(steps[index].group_edges(keys, lookup), dtype=np.int64).reshape(-1, 2)
    save_array(out, edges)
    return {"edges": len(edges), "keys": len(keys)}


def cluster(job: Job, steps: list[Any], index: int) -> dict[str, Any]:
    """Cluster every partition's edges and write each shard's rows to drop."""
    from thresher.selection.dedup import cluster_keepers

    folder = job.work.group_dir(index)
    done = folder / "done.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    count = partitions(job.work, index)
    parts = [np.load(folder / f"edges-{p:05d}.npy") for p in range(count)]
    edges = np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
    del parts
    lookup = RowLookup(folder, job.shards)
    members, keepers = cluster_keepers(edges, lambda p: lookup(p, "cost"))
    drop = members != keepers
    members, keepers = members[drop], keepers[drop]
    distinct, which = np.unique(keepers, return_inverse=True)
    names = [b.decode("utf-8", "replace") for b in lookup(distinct, "id").tolist()]
    reasons = [steps[index].drop_reason(n) for n in names]
    owner = np.searchsorted(lookup.starts, members, side="right") - 1
    for j in np.unique(owner).tolist():
        mine = np.flatnonzero(owner == j)
        packed = pack_strings([reasons[w] for w in which[mine].tolist()])
        save_npz(folder / f"drops-{lookup.indices[j]:05d}.npz",
                 {"pos": members[mine], "off": packed[0], "why": packed[1]})  # fmt: skip
    summary = {"edges": len(edges), "dropped": len(members), "clusters": len(distinct)}
    atomic_write_text(done, json.dumps(summary))
    return summary


def is_done(work: WorkDir, step: int) -> bool:
    return (work.group_dir(step) / "done.json").exists()


def clean(work: WorkDir, step: int) -> None:
    """Remove a finished shuffle's rows, keys and edges (its drops stay for the next pass)."""
    for pattern in ("rows-*.npy", "keys-*.npy", "edges-*.npy"):
        for path in work.group_dir(step).glob(pattern):
            path.unlink(missing_ok=True)


class ShardVerdicts:
    """A grouped step's drops in one shard, by position: the filter the next pass applies."""

    def __init__(self, drops: dict[int, str]) -> None:
        self.drops = drops

    @classmethod
    def load(cls, work: WorkDir, step: int, shard: int) -> ShardVerdicts:
        path = work.group_dir(step) / f"drops-{shard:05d}.npz"
        if not path.exists():
            return cls({})
        with np.load(path, allow_pickle=False) as data:
            why = unpack_strings(data["off"], data["why"])
            return cls(dict(zip(data["pos"].tolist(), why, strict=True)))

    def keep_positions(self, pos: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        found = [self.drops.get(p) for p in np.asarray(pos, dtype=np.int64).tolist()]
        return np.array([d is None for d in found], dtype=bool), found

    def keep(self, records: list[Record]) -> tuple[np.ndarray, list[str | None]]:
        return self.keep_positions(np.array([r.metadata["pos"] for r in records]))

