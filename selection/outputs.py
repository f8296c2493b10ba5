"""The output side of a job: kept rows (lossless), scores inline or aside, dropped rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from thresher.core.record import Record
from thresher.selection.quality.turns import turns
from thresher.selection.recipe import Recipe
from thresher.selection.report import rule_of
from thresher.selection.state import RowState
from thresher.selection.writers import JsonlWriter, RowWriter, input_schema, open_writer

EXAMPLES_PER_REASON = 3
KEPT_EXAMPLES = 5


class OutputSink:
    """Receives every row in position order and routes it to the kept or dropped outputs."""

    def __init__(
        self,
        recipe: Recipe,
        out: Path,
        paths: list[Path],
        formats: list[str],
        step_names: list[str],
    ) -> None:
        spec = recipe.output
        self.spec = spec
        self.step_names = step_names
        self.output_path = out / spec.path
        schema = input_schema(paths[0], formats[0]) if len(set(formats)) == 1 else None
        self.writer: RowWriter = open_writer(self.output_path, spec.format, schema=schema)
        self.scores_path = out / "scores.jsonl" if spec.scores == "side" else None
        self.side = JsonlWriter(self.scores_path) if self.scores_path else None
        self.dropped_path = out / "dropped.jsonl" if spec.write_dropped else None
        self.dropped = JsonlWriter(self.dropped_path) if self.dropped_path else None
        self.examples: dict[str, list[dict[str, object]]] = {}
        self.wanted: set[int] | None = None

    def wants(self, pos: int) -> bool:
        """Whether the row at ``pos`` must be read at all (see :meth:`bind`)."""
        return self.wanted is None or pos in self.wanted

    def bind(self, state: RowState) -> None:
        """Plan which rows to read: the kept ones and the first few dropped per reason
        (every row when dropped rows are written)."""
        if self.spec.scores == "inline" and hasattr(self.writer, "float_structs"):
            self.writer.float_structs[self.spec.score_field] = list(state.scores)
        if self.dropped is not None:
            return
        wanted = set(state.pos[state.alive].tolist())
        seen: dict[tuple[int, str], int] = {}
        for i in np.flatnonzero(~state.alive):
            group = (int(state.drop_step[i]), rule_of(str(state.reasons[i]).split("; ")[0]))
            if seen.get(group, 0) < EXAMPLES_PER_REASON:
                seen[group] = seen.get(group, 0) + 1
                wanted.add(int(state.pos[i]))
        self.wanted = wanted

    def add(self, records: list[Record], state: RowState) -> list[Record]:
        """Write one batch; returns its kept records (with their scores restored)."""
        if not records:
            return []
        ri = state.index(np.array([r.metadata["pos"] for r in records], dtype=np.int64))
        kept_rows, side_rows, dropped_rows, kept = [], [], [], []
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
                elif self.side is not None:
                    side_rows.append({"id": record.id, "scores": scores})
                kept_rows.append(row)
                self._example("kept", record, scores, KEPT_EXAMPLES)
            else:
                step = self.step_names[state.drop_step[i]]
                reason = str(state.reasons[i])
                # Examples per rule, not per reason text (which carries each row's numbers).
                group = f"{step}: {rule_of(reason.split('; ')[0])}"
                self._example(group, record, scores, EXAMPLES_PER_REASON, reason)
                if self.dropped is not None:
                    dropped_rows.append(
                        {
                            "id": record.id,
                            "step": step,
                            "reason": reason,
                            "scores": scores,
                            "row": row,
                        }
                    )
        self.writer.write(kept_rows)
        if self.side is not None:
            self.side.write(side_rows)
        if self.dropped is not None:
            self.dropped.write(dropped_rows)
        return kept

    def _example(
        self, group: str, record: Record, scores: dict[str, float], cap: int, reason: str = ""
    ) -> None:
        bucket = self.examples.setdefault(group, [])
        if len(bucket) < cap:
            found = turns(record)
            request = found[0].prompt if found else ""
            response = "\n---\n".join(t.response for t in found)
            bucket.append({
                "id": record.id, "text": record.content[:600], "request": request[:400],
                "response": response[:600], "reason": reason, "scores": scores,
            })  # fmt: skip

    def commit(self) -> None:
        self.writer.commit()
        for extra in (self.side, self.dropped):
            if extra is not None:
                extra.commit()

    def abort(self) -> None:
        self.writer.abort()
        for extra in (self.side, self.dropped):
            if extra is not None:
                extra.abort()
