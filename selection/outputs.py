"""The output side of a job: each shard's task writes its own parts; the driver joins or lists them.

Every input shard becomes one part of each output (kept rows, their scores when aside, dropped
rows, unreadable rows), named ``part-SSSSS`` by the shard's index, so the names are the same
however many workers wrote them. A sharded job leaves the parts where they are (``selected/``,
``dropped/``, ``scores/``, ``rejects/``) with a ``manifest.json``; otherwise the parts are
written in the work folder and joined, in shard order, into single files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thresher.core.errors import ConfigError
from thresher.core.files import atomic_write_text
from thresher.core.record import Record
from thresher.selection.quality.turns import turns
from thresher.selection.recipe import OutputSpec
from thresher.selection.state import ShardState
from thresher.selection.summary import ShardSummary, rule_of
from thresher.selection.writers import (
    JsonlWriter,
    RowWriter,
    join_parts,
    open_writer,
    resolve_format,
)

EXAMPLES_PER_REASON = 3
KEPT_EXAMPLES = 5
EXAMPLE_CAPS = {"kept": KEPT_EXAMPLES, "dropped": EXAMPLES_PER_REASON}
KINDS = ("kept", "scores", "dropped", "rejects")
_SUFFIX = {"jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz", "parquet": ".parquet", "hf": ".parquet"}
_ASIDE = {"scores": "scores.jsonl", "dropped": "dropped.jsonl", "rejects": "rejects.jsonl"}


@dataclass(frozen=True)
class PartLayout:
    """Where a job's parts and final files go."""

    out: Path
    staging: Path
    spec: OutputSpec
    fmt: str  # the kept rows' format, resolved

    @classmethod
    def of(cls, spec: OutputSpec, out: Path, staging: Path) -> PartLayout:
        fmt = resolve_format(out / spec.path, spec.format)
        if spec.sharded and fmt == "hf":
            raise ConfigError(
                "output.sharded writes jsonl, jsonl.gz or parquet parts; give output.path a "
                ".jsonl, .jsonl.gz or .parquet name (a `datasets` folder is one file).",
                field="output.sharded",
            )
        return cls(out, staging, spec, fmt)

    def enabled(self, kind: str) -> bool:
        return kind in ("kept", "rejects") or (
            self.spec.scores == "side" if kind == "scores" else self.spec.write_dropped
        )

    def folder(self, kind: str) -> Path:
        if not self.spec.sharded:
            return self.staging / kind
        if kind != "kept":
            return self.out / kind
        name = self.spec.path
        for suffix in (".jsonl.gz", ".json.gz", ".gz", ".jsonl", ".json", ".ndjson", ".parquet",
                       ".pq"):  # fmt: skip
            if name.lower().endswith(suffix):
                return self.out / name[: -len(suffix)]
        return self.out / name

    def part(self, kind: str, shard: int) -> Path:
        suffix = _SUFFIX[self.fmt] if kind == "kept" else ".jsonl"
        return self.folder(kind) / f"part-{shard:05d}{suffix}"

    def final(self, kind: str) -> Path:
        """The single file of ``kind`` (or, sharded, the folder of its parts)."""
        if self.spec.sharded:
            return self.folder(kind)
        return self.out / (self.spec.path if kind == "kept" else _ASIDE[kind])

    def clear(self) -> None:
        """Remove the parts an earlier, different job left in the sharded folders."""
        if self.spec.sharded:
            for kind in KINDS:
                for old in self.folder(kind).glob("part-*"):
                    old.unlink()

    def join(self, shards: list[int], kinds: tuple[str, ...] = KINDS) -> dict[str, Path | None]:
        """Join each output's parts into its single file (sharded: nothing to join); returns
        the outputs that exist (rejects only when some row was unreadable)."""
        found: dict[str, Path | None] = {}
        for kind in kinds:
            parts = [self.part(kind, s) for s in shards if self.part(kind, s).exists()]
            if not self.enabled(kind) or (kind == "rejects" and not parts):
                if kind == "rejects" and not self.spec.sharded:
                    self.final(kind).unlink(missing_ok=True)
                found[kind] = None
                continue
            if not self.spec.sharded:
                join_parts(parts, self.final(kind), self.fmt if kind == "kept" else "jsonl")
            found[kind] = self.final(kind)
        return found

    def _shown(self, path: Path) -> str:
        """A path relative to the job's folder when inside it, else as given."""
        return str(path.relative_to(self.out)) if path.is_relative_to(self.out) else str(path)

    def write_manifest(self, fingerprint: str, counts: list[dict[str, Any]]) -> Path:
        """``manifest.json``: every output file with its rows, and the input each part read."""
        files: dict[str, Any] = {}
        for kind in KINDS:
            if not self.enabled(kind):
                continue
            if self.spec.sharded:
                files[kind] = [
                    {"path": self._shown(self.part(kind, c["shard"])),
                     "rows": c[kind], "input": c["input"]}
                    for c in counts if self.part(kind, c["shard"]).exists()
                ]  # fmt: skip
            elif self.final(kind).exists():
                files[kind] = {"path": self._shown(self.final(kind)),
                               "rows": sum(c[kind] for c in counts)}  # fmt: skip
        path = self.out / "manifest.json"
        data = {"job": fingerprint, "format": self.fmt, "sharded": self.spec.sharded,
                "files": files}  # fmt: skip
        atomic_write_text(path, json.dumps(data, indent=1))
        return path


def rows_to_read(state: ShardState | None, write_dropped: bool) -> set[int] | None:
    """Positions a shard's write must read: the rows alive and the first few dropped per
    reason (every row when dropped rows are written, or before any state exists)."""
    if state is None or write_dropped:
        return None
    wanted = set(state.pos[state.alive].tolist())
    seen: dict[tuple[int, str], int] = {}
    for i in np.flatnonzero(~state.alive).tolist():
        group = (int(state.drop_step[i]), rule_of(str(state.reasons[i]).split("; ")[0]))
        if seen.get(group, 0) < EXAMPLES_PER_REASON:
            seen[group] = seen.get(group, 0) + 1
            wanted.add(int(state.pos[i]))
    return wanted


class ShardSink:
    """Receives one shard's rows in position order and writes its parts."""

    def __init__(self, layout: PartLayout, shard: int, step_names: list[str],
                 score_names: list[str], schema: Any, summary: ShardSummary) -> None:  # fmt: skip
        spec = layout.spec
        self.spec, self.step_names, self.summary = spec, step_names, summary
        kept_format = "parquet" if layout.fmt == "hf" else layout.fmt
        writers: dict[str, RowWriter] = {}
        for kind in ("kept", "scores", "dropped"):
            if layout.enabled(kind):
                path = layout.part(kind, shard)
                path.parent.mkdir(parents=True, exist_ok=True)
                writers[kind] = (open_writer(path, kept_format, schema=schema) if kind == "kept"
                                 else JsonlWriter(path))  # fmt: skip
        if spec.scores == "inline" and hasattr(writers["kept"], "float_structs"):
            writers["kept"].float_structs[spec.score_field] = list(score_names)  # type: ignore[attr-defined]
        self.writers = writers

    def add(self, records: list[Record], state: ShardState) -> list[Record]:
        """Write one batch; returns its kept records (with their scores restored)."""
        if not records:
            return []
        ri = state.index(np.array([r.metadata["pos"] for r in records], dtype=np.int64))
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in self.writers}
        kept = []
        for record, i in zip(records, ri, strict=True):
            scores = {
                name: float(col[i]) for name, col in state.scores.items() if not np.isnan(col[i])
            }
            record.scores.update(scores)
            row = record.metadata["row"]
            if state.drop_step[i] < 0:
                kept.append(record)
                if self.spec.scores == "inline":
                    row = {**row, self.spec.score_field: scores}
                elif "scores" in rows:
                    rows["scores"].append({"id": record.id, "scores": scores})
                rows["kept"].append(row)
                self._example("kept", record, scores, KEPT_EXAMPLES)
            else:
                step = self.step_names[state.drop_step[i]]
                reason = str(state.reasons[i])
                # Examples per rule, not per reason text (which carries each row's numbers).
                group = f"{step}: {rule_of(reason.split('; ')[0])}"
                self._example(group, record, scores, EXAMPLES_PER_REASON, reason)
                if "dropped" in rows:
                    rows["dropped"].append({"id": record.id, "step": step, "reason": reason,
                                            "scores": scores, "row": row})  # fmt: skip
        for kind, writer in self.writers.items():
            writer.write(rows[kind])
        return kept

    def _example(
        self, group: str, record: Record, scores: dict[str, float], cap: int, reason: str = ""
    ) -> None:
        if len(self.summary.examples.get(group, ())) >= cap:
            return
        found = turns(record)
        request = found[0].prompt if found else ""
        response = "\n---\n".join(t.response for t in found)
        self.summary.example(group, {
            "id": record.id, "text": record.content[:600], "request": request[:400],
            "response": response[:600], "reason": reason, "scores": scores,
        }, cap)  # fmt: skip

    def commit(self) -> None:
        for writer in self.writers.values():
            writer.commit()

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
