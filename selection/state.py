"""Per-row job state, kept per shard on disk beside the job, and the work folder's layout.

The driver never holds a row's state: after each pass, the task that ran a shard writes that
shard's rows' fate (alive, or dropped by which step and why) and scores, with the shard's fit
statistics and a small summary; the driver reads only the statistics and summaries.

Layout of a job's work folder (``<output_dir>/.work``)::

    manifest.json               recipe fingerprint: a resumed job must be the same job
    fit-S.npy                   the merged fit statistics of step S
    pass-P/SSSSS-BBBBB.npz      one finished batch of shard S in pass P (mid-shard resume)
    pass-P/shard-SSSSS.npz      shard S's row state after pass P, its fit statistics, summary
    pass-P/rank-S.json          a top-k selection's thresholds (the barrier of pass P)
    pass-P/chosen-S.npy         the positions a gathered selection kept (the barrier of pass P)
    pass-P/done.json            pass P and its barrier are complete
    group-S/                    step S's shuffle (see :mod:`thresher.selection.shuffle`)
    final/shard-SSSSS.npz       shard S's summary once its outputs are written
    parts/                      output shards waiting to be joined into single files

Every file is written under a temporary name and renamed, so a SIGKILL leaves whole files only.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thresher.core.files import atomic_path, atomic_write_text
from thresher.selection.io import Reject
from thresher.selection.plan import ALIVE, BatchOutcome


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def pack_strings(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as (offsets, utf-8 bytes): no fixed width, so one long string costs only itself."""
    data = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(data), dtype=np.uint8)


def unpack_strings(offsets: np.ndarray, blob: np.ndarray) -> list[str]:
    raw = blob.tobytes()
    bounds = offsets.tolist()
    return [raw[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def json_array(data: Any) -> np.ndarray:
    """JSON as a byte array, to travel inside an ``.npz`` beside the arrays it describes."""
    return np.frombuffer(json.dumps(data).encode("utf-8"), dtype=np.uint8)


def array_json(array: np.ndarray) -> Any:
    return json.loads(array.tobytes().decode("utf-8"))


def save_outcome(path: Path, outcome: BatchOutcome) -> None:
    ids = pack_strings(outcome.ids)
    reasons = pack_strings([r or "" for r in outcome.reasons])
    arrays = {
        "pos": outcome.pos, "drop_step": outcome.drop_step,
        "ids_off": ids[0], "ids": ids[1], "why_off": reasons[0], "why": reasons[1],
        "rejects": json_array([r.to_dict() for r in outcome.rejects]),
    }  # fmt: skip
    arrays.update({f"score:{k}": v for k, v in outcome.scores.items()})
    arrays.update({f"stats:{k}": v for k, v in outcome.stats.items()})
    save_npz(path, arrays)


def load_outcome(path: Path) -> BatchOutcome:
    with np.load(path, allow_pickle=False) as data:
        return BatchOutcome(
            key=path.stem,
            pos=data["pos"],
            ids=unpack_strings(data["ids_off"], data["ids"]),
            drop_step=data["drop_step"],
            reasons=[r or None for r in unpack_strings(data["why_off"], data["why"])],
            scores={k[6:]: data[k] for k in data.files if k.startswith("score:")},
            stats={int(k[6:]): data[k] for k in data.files if k.startswith("stats:")},
            rejects=[Reject(**r) for r in array_json(data["rejects"])],
        )


@dataclass
class ShardState:
    """The fate so far of every row of one shard, sorted by position."""

    pos: np.ndarray
    ids: list[str]
    drop_step: np.ndarray
    reasons: np.ndarray  # object: a string for each dropped row, None for the others
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_outcomes(cls, outcomes: list[BatchOutcome]) -> ShardState:
        """The first pass's state: every row the shard's batches read."""
        pos = np.concatenate([o.pos for o in outcomes]) if outcomes else np.zeros(0, np.int64)
        if (np.diff(pos) <= 0).any():
            raise RuntimeError("a shard's rows came out of order or twice")
        state = cls(
            pos=pos,
            ids=[i for o in outcomes for i in o.ids],
            drop_step=np.full(len(pos), ALIVE, dtype=np.int16),
            reasons=np.full(len(pos), None, dtype=object),
        )
        state.merge(outcomes)
        return state

    def index(self, pos: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.pos, pos)

    def merge(self, outcomes: Iterable[BatchOutcome]) -> None:
        """Write a pass's outcomes (for rows alive at its start) into the state."""
        for o in outcomes:
            ri = self.index(o.pos)
            dropped = o.drop_step != ALIVE
            self.drop_step[ri[dropped]] = o.drop_step[dropped]
            reasons = np.array(o.reasons, dtype=object)
            self.reasons[ri[dropped]] = reasons[dropped]
            for name, values in o.scores.items():
                column = self.scores.setdefault(name, np.full(len(self.pos), np.nan))
                column[ri] = values

    def drop(self, rows: np.ndarray, step: int, reasons: Sequence[str] | str) -> None:
        """Mark ``rows`` (indices into this state) dropped by ``step``."""
        self.drop_step[rows] = step
        self.reasons[rows] = reasons if isinstance(reasons, str) else np.array(reasons, object)

    @property
    def alive(self) -> np.ndarray:
        return self.drop_step == ALIVE

    def save(self, path: Path, stats: dict[int, np.ndarray], summary: dict[str, Any]) -> None:
        """Persist the state with the shard's fit statistics and summary (one file: its
        existence says the shard's pass is complete)."""
        ids = pack_strings(self.ids)
        dropped = np.flatnonzero(self.drop_step != ALIVE)
        why = pack_strings([str(self.reasons[i]) for i in dropped])
        arrays = {
            "pos": self.pos, "drop_step": self.drop_step, "ids_off": ids[0], "ids": ids[1],
            "why_rows": dropped, "why_off": why[0], "why": why[1], "summary": json_array(summary),
        }  # fmt: skip
        arrays.update({f"score:{k}": v for k, v in self.scores.items()})
        arrays.update({f"stats:{k}": v for k, v in stats.items()})
        save_npz(path, arrays)

    @classmethod
    def load(cls, path: Path, *, strings: bool = True) -> ShardState:
        """The saved state; without ``strings``, ids and reasons are left empty (cheaper)."""
        with np.load(path, allow_pickle=False) as data:
            n = len(data["pos"])
            reasons = np.full(n, None, dtype=object)
            ids: list[str] = []
            if strings:
                ids = unpack_strings(data["ids_off"], data["ids"])
                why = unpack_strings(data["why_off"], data["why"])
                reasons[data["why_rows"]] = np.array(why, dtype=object)
            return cls(
                pos=data["pos"],
                ids=ids,
                drop_step=data["drop_step"].copy(),
                reasons=reasons,
                scores={k[6:]: data[k].copy() for k in data.files if k.startswith("score:")},
            )


def load_shard_extras(path: Path) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """A saved shard's fit statistics and summary, without its rows' state."""
    with np.load(path, allow_pickle=False) as data:
        stats = {int(k[6:]): data[k] for k in data.files if k.startswith("stats:")}
        return stats, array_json(data["summary"])


class WorkDir:
    """The job's work folder (see the module docstring for its layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, fingerprint: str, *, fresh: bool) -> bool:
        """Create or reuse the folder; returns True when resuming a previous run."""
        manifest = self.root / "manifest.json"
        if fresh and self.root.exists():
            shutil.rmtree(self.root)
        if manifest.exists():
            old = json.loads(manifest.read_text()).get("fingerprint")
            if old == fingerprint:
                return True
            if not self.has_progress():  # nothing to lose: adopt the new recipe
                shutil.rmtree(self.root)
                return self.open(fingerprint, fresh=False)
            from thresher.core.errors import ConfigError

            raise ConfigError(
                f"{self.root.parent} holds a job with a different recipe (or inputs); use a "
                "new output directory or start over with --fresh.",
                field="output_dir",
            )
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(manifest, json.dumps({"fingerprint": fingerprint}))
        return False

    def has_progress(self) -> bool:
        """Whether an earlier run finished any batch, shard or pass here."""
        return any(self.root.glob("pass-*/*.npz")) or any(self.root.glob("final/*.npz"))

    def _dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def pass_dir(self, pass_index: int) -> Path:
        return self._dir(f"pass-{pass_index}")

    def batch_path(self, pass_index: int, key: str) -> Path:
        return self.pass_dir(pass_index) / f"{key}.npz"

    def shard_path(self, pass_index: int, shard: int) -> Path:
        return self.pass_dir(pass_index) / f"shard-{shard:05d}.npz"

    def done_path(self, pass_index: int) -> Path:
        return self.pass_dir(pass_index) / "done.json"

    def rank_path(self, pass_index: int, step: int) -> Path:
        return self.pass_dir(pass_index) / f"rank-{step}.json"

    def chosen_path(self, pass_index: int, step: int) -> Path:
        return self.pass_dir(pass_index) / f"chosen-{step}.npy"

    def fit_path(self, step: int) -> Path:
        return self.root / f"fit-{step}.npy"

    def group_dir(self, step: int) -> Path:
        return self._dir(f"group-{step}")

    def final_path(self, shard: int) -> Path:
        return self._dir("final") / f"shard-{shard:05d}.npz"
