"""The job report: counts in and out per step, score histograms, kept and dropped examples.

Saved as ``report.json``, one PNG histogram per score and ``report.html``; the
:class:`JobReport` object renders itself in notebooks through ``_repr_html_``.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thresher.selection.recipe import Recipe
from thresher.selection.state import RowState

TOP_REASONS = 20


def rule_of(reason: str) -> str:
    """The rule a drop reason names: ``"non_answer: response ..."`` -> ``non_answer``,
    ``"minhash duplicate of x"`` -> ``minhash duplicate``, ``"length < 5"`` -> ``length < 5``."""
    head = reason.split(":", 1)[0] if ":" in reason else reason.split(" of ", 1)[0]
    return head.strip()


def rule_counts(reasons: Any) -> dict[str, int]:
    """Rows dropped per rule (a row that several rules drop counts for each of them)."""
    counts: Counter[str] = Counter()
    for reason in reasons:
        counts.update({rule_of(part) for part in str(reason).split("; ")})
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))  # ties by name


@dataclass
class StepCount:
    """One step's effect: rows in, rows out, and the commonest reasons for dropping."""

    name: str
    type: str
    rows_in: int
    rows_out: int
    reasons: dict[str, int] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)


@dataclass
class Phase:
    """Wall time of one pass over the data (or of writing the outputs)."""

    name: str
    rows: int
    seconds: float


@dataclass
class JobReport:
    """Everything a person needs to judge a selection job."""

    rows_read: int
    rejects: int
    rows_kept: int
    steps: list[StepCount]
    histograms: dict[str, str] = field(default_factory=dict)
    score_summary: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary_line(self) -> str:
        """One line: rows read, rejects, kept, the biggest drop per step, then any notes."""
        parts = [
            f"read {self.rows_read}",
            f"rejected {self.rejects} bad rows",
            f"kept {self.rows_kept}",
        ]
        for s in self.steps:
            if s.rows_in != s.rows_out:
                dropped = f"{s.name} dropped {s.rows_in - s.rows_out}"
                if len(s.rules) > 1:
                    dropped += " (" + ", ".join(f"{k} {v}" for k, v in s.rules.items()) + ")"
                parts.append(dropped)
        for name, metrics in self.metrics.items():
            parts.extend(f"{name} {k} {v:.4g}" for k, v in metrics.items())
        line = ", ".join(parts) + f" in {self.seconds:.1f}s"
        return ". ".join([line, *self.notes])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in (
            ("report.json", json.dumps(self.to_dict(), indent=2)),
            ("report.html", self.html(folder)),
        ):
            tmp = folder / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(folder / name)

    def html(self, folder: Path | None = None, *, embed: bool = False) -> str:
        """The report as a standalone HTML page (images linked, or embedded when ``embed``)."""
        rows = "".join(
            f"<tr><td>{html.escape(s.name)}</td><td>{html.escape(s.type)}</td>"
            f"<td>{s.rows_in}</td><td>{s.rows_out}</td><td>{s.rows_in - s.rows_out}</td>"
            f"<td>{html.escape(', '.join(f'{k} {v}' for k, v in s.rules.items()))}</td></tr>"
            for s in self.steps
        )
        images = []
        for score, png in self.histograms.items():
            src = png if not embed else _data_uri(Path(png))
            if folder is not None and not embed:
                src = Path(png).name
            images.append(
                f"<figure><img src='{src}' width='420'>"
                f"<figcaption>{html.escape(score)}</figcaption></figure>"
            )
        metrics = "".join(
            f"<li>{html.escape(step)}: "
            + ", ".join(f"{html.escape(k)} = {v:.4g}" for k, v in m.items())
            + "</li>"
            for step, m in self.metrics.items()
        )
        groups = []
        for group, items in self.examples.items():
            cells = "".join(
                f"<li><code>{html.escape(e['id'])}</code> "
                + (f"<i>{html.escape(str(e['reason']))}</i><br>" if e.get("reason") else "")
                + f"<b>request</b> {html.escape(str(e.get('request', e['text'])))}<br>"
                + f"<b>response</b> {html.escape(str(e.get('response', '')))}"
                + f" <small>{html.escape(json.dumps(e['scores']))}</small></li>"
                for e in items
            )
            groups.append(f"<h3>{html.escape(group)}</h3><ul>{cells}</ul>")
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>Thresher selection "
            "report</title><style>body{font-family:sans-serif;max-width:60em;margin:auto}"
            "td,th{padding:2px 8px;text-align:right}td:first-child{text-align:left}"
            "li{margin-bottom:.4em}</style></head><body>"
            f"<h1>Selection report</h1><p>{html.escape(self.summary_line())}</p>"
            "<table><tr><th>step</th><th>type</th><th>in</th><th>out</th><th>dropped</th>"
            f"<th>by rule</th></tr>{rows}</table>"
            + (f"<h2>Metrics</h2><ul>{metrics}</ul>" if metrics else "")
            + (("<h2>Scores</h2>" + "".join(images)) if images else "")
            + "<h2>Examples (kept, and dropped per reason)</h2>"
            + "".join(groups)
            + "</body></html>"
        )

    def _repr_html_(self) -> str:
        return self.html(embed=True)


def _data_uri(path: Path) -> str:
    import base64

    if not path.exists():
        return ""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _histogram(name: str, values: np.ndarray, kept: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    finite = np.isfinite(values)
    bins = np.histogram_bin_edges(values[finite], bins=40) if finite.any() else 10
    ax.hist(values[finite & ~kept], bins=bins, alpha=0.6, label="dropped", color="#c44")
    ax.hist(values[finite & kept], bins=bins, alpha=0.6, label="kept", color="#48c")
    ax.set_title(name)
    ax.set_xlabel("score")
    ax.set_ylabel("rows")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def build_report(
    recipe: Recipe,
    steps: list[Any],
    state: RowState,
    examples: dict[str, list[dict[str, Any]]],
    metrics: dict[str, dict[str, float]],
    rejects: int,
    folder: Path,
) -> JobReport:
    """Count what each step did from the final row state, and draw the score histograms."""
    n = len(state.pos)
    counts = []
    gone = 0
    for i, (spec, _step) in enumerate(zip(recipe.steps, steps, strict=True)):
        mine = state.drop_step == i
        reasons = Counter(state.reasons[mine]).most_common(TOP_REASONS)
        rows_in = n - gone
        gone += int(mine.sum())
        counts.append(
            StepCount(
                spec.name,
                spec.type,
                rows_in,
                n - gone,
                {str(k): int(v) for k, v in reasons},
                rule_counts(state.reasons[mine]),
            )  # fmt: skip
        )
    folder.mkdir(parents=True, exist_ok=True)
    histograms, summary = {}, {}
    kept = state.alive
    for name, values in state.scores.items():
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            continue
        path = folder / f"hist-{_safe(name)}.png"
        _histogram(name, values, kept, path)
        histograms[name] = str(path)
        summary[name] = {
            "count": int(finite.size),
            "mean": float(finite.mean()),
            "min": float(finite.min()),
            "max": float(finite.max()),
            "p50": float(np.median(finite)),
        }
    return JobReport(
        rows_read=n,
        rejects=rejects,
        rows_kept=int(kept.sum()),
        steps=counts,
        histograms=histograms,
        score_summary=summary,
        metrics=metrics,
        examples=examples,
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
