"""Typed results of retrieval: scored demonstrations, renderable in a notebook."""

from __future__ import annotations

import html
from dataclasses import dataclass, field, replace
from typing import Any

from thresher.core.record import Record
from thresher.prompting.pool import record_label, record_output


@dataclass(frozen=True, slots=True)
class Demonstration:
    """One retrieved record with the retriever's own score and its cosine similarity to the query.

    ``score`` is what the method ranked by (BM25 weight, MMR gain, ...); ``similarity`` is the
    same yardstick for every method, used to order and to drop the least relevant first.
    """

    record: Record
    score: float
    similarity: float

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def text(self) -> str:
        return self.record.content

    @property
    def label(self) -> str | None:
        return record_label(self.record)

    @property
    def output(self) -> str | None:
        return record_output(self.record)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "text": self.text, "score": self.score}
        if self.label is not None:
            row["label"] = self.label
        if self.output is not None:
            row["output"] = self.output
        return row


@dataclass(slots=True)
class RetrievalResult:
    """Demonstrations for one query, in prompt order (the last is nearest the query)."""

    query: str
    method: str
    demonstrations: list[Demonstration]
    order: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.demonstrations)

    @property
    def ids(self) -> list[str]:
        return [d.id for d in self.demonstrations]

    def reordered(self, demonstrations: list[Demonstration], order: str) -> RetrievalResult:
        return replace(self, demonstrations=demonstrations, order=order)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "method": self.method,
            "order": self.order,
            "demonstrations": [d.to_dict() for d in self.demonstrations],
        }

    def _repr_html_(self) -> str:
        rows = "".join(
            "<tr>"
            f"<td>{i}</td><td>{html.escape(d.id)}</td>"
            f"<td>{html.escape(d.label or d.output or '')}</td>"
            f"<td>{d.score:.4f}</td><td>{d.similarity:.4f}</td>"
            f"<td>{html.escape(d.text[:200])}</td>"
            "</tr>"
            for i, d in enumerate(self.demonstrations)
        )
        order = f", order <b>{html.escape(self.order)}</b>" if self.order else ""
        return (
            f"<div><p>{len(self)} demonstrations by <b>{html.escape(self.method)}</b>{order} "
            f"for <i>{html.escape(self.query[:200])}</i></p>"
            "<table><thead><tr><th>#</th><th>id</th><th>label/output</th><th>score</th>"
            f"<th>similarity</th><th>text</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
