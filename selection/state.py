"""Per-row job state between passes, and its atomic persistence (what makes jobs resumable).

Layout of a job's work folder (``<output_dir>/.work``)::

    manifest.json             recipe fingerprint: a resumed job must be the same job
    pass-P/KEY.npz            one finished batch of pass P (local executor, mid-pass resume)
    state-P.npz               every row's state after pass P and its barrier (pass P is done)
    fit-S.npy                 the summed fit statistics of step S

Every file is written under a temporary name and renamed, so a SIGKILL leaves whole files only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thresher.selection.io import Reject
from thresher.selection.plan import ALIVE, BatchOutcome


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def _strings(values: Iterable[str | None]) -> np.ndarray:
    return np.array(["" if v is None else v for v in values], dtype=str)


def save_outcome(path: Path, outcome: BatchOutcome) -> None:
    arrays = {
        "pos": outcome.pos,
        "ids": _strings(outcome.ids),
        "drop_step": outcome.drop_step,
        "reasons": _strings(outcome.reasons),
        "rejects": np.array([json.dumps(r.to_dict()) for r in outcome.rejects], dtype=str),
    }
    arrays.update({f"score:{k}": v for k, v in outcome.scores.items()})
    arrays.update({f"stats:{k}": v for k, v in outcome.stats.items()})
    _save_npz(path, arrays)


def load_outcome(path: Path) -> BatchOutcome:
    with np.load(path, allow_pickle=False) as data:
        return BatchOutcome(
            key=path.stem,
            pos=data["pos"],
            ids=[str(x) for x in data["ids"]],
            drop_step=data["drop_step"],
            reasons=[str(x) or None for x in data["reasons"]],
            scores={k[6:]: data[k] for k in data.files if k.startswith("score:")},
            stats={int(k[6:]): data[k] for k in data.files if k.startswith("stats:")},
            rejects=[Reject(**json.loads(str(x))) for x in data["rejects"]],
        )


@dataclass
class RowState:
    """Every row's fate so far, sorted by position."""

    pos: np.ndarray
    ids: np.ndarray
    drop_step: np.ndarray
    reasons: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_outcomes(cls, outcomes: list[BatchOutcome]) -> RowState:
        pos = np.concatenate([o.pos for o in outcomes]) if outcomes else np.zeros(0, np.int64)
        order = np.argsort(pos, kind="stable")
        state = cls(
            pos=pos[order],
            ids=np.array([i for o in outcomes for i in o.ids], dtype=object)[order],
            drop_step=np.full(len(pos), ALIVE, dtype=np.int16),
            reasons=np.full(len(pos), None, dtype=object),
        )
        if len(np.unique(state.pos)) != len(state.pos):
            raise RuntimeError("two rows share a position; the input was read twice")
        state.merge(outcomes)
        return state

    def index(self, pos: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.pos, pos)

    def merge(self, outcomes: Iterable[BatchOutcome]) -> None:
        """Write the outcomes of a pass (rows alive at its start) into the state."""
        for o in outcomes:
            ri = self.index(o.pos)
            dropped = o.drop_step != ALIVE
            self.drop_step[ri[dropped]] = o.drop_step[dropped]
            reasons = np.array(o.reasons, dtype=object)
            self.reasons[ri[dropped]] = reasons[dropped]
            for name, values in o.scores.items():
                column = self.scores.setdefault(name, np.full(len(self.pos), np.nan))
                column[ri] = values

    @property
    def alive(self) -> np.ndarray:
        return self.drop_step == ALIVE

    def save(self, path: Path) -> None:
        arrays = {
            "pos": self.pos,
            "ids": _strings(self.ids),
            "drop_step": self.drop_step,
            "reasons": _strings(self.reasons),
        }
        arrays.update({f"score:{k}": v for k, v in self.scores.items()})
        _save_npz(path, arrays)

    @classmethod
    def load(cls, path: Path) -> RowState:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                pos=data["pos"],
                ids=data["ids"].astype(object),
                drop_step=data["drop_step"].copy(),
                reasons=np.array([str(x) or None for x in data["reasons"]], dtype=object),
                scores={k[6:]: data[k].copy() for k in data.files if k.startswith("score:")},
            )


class WorkDir:
    """The job's work folder: manifest, batch checkpoints, pass states, fit totals."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, fingerprint: str, *, fresh: bool) -> bool:
        """Create or reuse the folder; returns True when resuming a previous run."""
        import shutil

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
        tmp = manifest.with_name(".manifest.json.tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint}))
        os.replace(tmp, manifest)
        return False

    def has_progress(self) -> bool:
        """Whether an earlier run finished any batch or pass here."""
        return any(self.root.glob("state-*.npz")) or any(self.root.glob("pass-*/*.npz"))

    def batch_dir(self, pass_index: int) -> Path:
        path = self.root / f"pass-{pass_index}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def state_path(self, pass_index: int) -> Path:
        return self.root / f"state-{pass_index}.npz"

    def fit_path(self, step: int) -> Path:
        return self.root / f"fit-{step}.npy"

    def rejects_path(self) -> Path:
        return self.root / "rejects.jsonl"
