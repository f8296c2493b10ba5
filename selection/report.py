"""The job report: counts in and out per step, score histograms, kept and dropped examples.

Saved as ``report.json``, one SVG histogram per score and ``report.html``; the
:class:`JobReport` object renders itself in notebooks through ``_repr_html_``.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thresher.core.files import atomic_path
from thresher.selection.recipe import Recipe
from thresher.selection.summary import ScoreSketch, ShardSummary

TOP_REASONS = 20


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
    """Wall time of one stage of a job: a ``map`` over shards or partitions (``task_seconds``:
    the tasks' own time, summed) or ``serial`` work that does not shrink with more workers."""

    name: str
    rows: int
    seconds: float
    kind: str = "map"
    task_seconds: float = 0.0


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
    driver_peak_mb: float = 0.0
    worker_peak_mb: float = 0.0

    @property
    def serial_seconds(self) -> float:
        """The job's time outside its map stages: start-up, barriers, joins, the report."""
        return self.seconds - sum(p.seconds for p in self.phases if p.kind == "map")

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
        if self.driver_peak_mb:
            line += (f" (peak memory: driver {self.driver_peak_mb:.0f} MB, "
                     f"largest worker {self.worker_peak_mb:.0f} MB)")  # fmt: skip
        return ". ".join([line, *self.notes])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "serial_seconds": self.serial_seconds}

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
        for score, image in self.histograms.items():
            src = image if not embed else _data_uri(Path(image))
            if folder is not None and not embed:
                src = Path(image).name
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
    return "data:image/svg+xml;base64," + base64.b64encode(path.read_bytes()).decode()


def _histogram(name: str, sketch: ScoreSketch, path: Path) -> None:
    """The score's histogram (kept over dropped rows) as a small SVG, drawn without a
    plotting library: the report costs no matplotlib import."""
    edges, kept, dropped = sketch.histogram(40)
    width, height, left, top, plot_w, plot_h = 420, 270, 48, 28, 360, 200
    top_count = max(1.0, float(np.maximum(kept, dropped).max()))
    bar = plot_w / len(kept)
    shapes = []
    for counts, color in ((dropped, "#c44"), (kept, "#48c")):
        for i, c in enumerate(counts.tolist()):
            if c:
                h = plot_h * c / top_count
                shapes.append(f"<rect x='{left + i * bar:.1f}' y='{top + plot_h - h:.1f}' "
                              f"width='{bar:.1f}' height='{h:.1f}' fill='{color}' "
                              "fill-opacity='0.6'/>")  # fmt: skip
    ticks = "".join(
        f"<text x='{left + plot_w * f:.0f}' y='{top + plot_h + 16}' text-anchor='middle'>"
        f"{v:.4g}</text>"
        for f, v in ((0, edges[0]), (0.5, (edges[0] + edges[-1]) / 2), (1, edges[-1]))
    )
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        "font-family='sans-serif' font-size='11'>"
        f"<text x='{width / 2}' y='16' text-anchor='middle' font-size='13'>"
        f"{html.escape(name)}</text>{''.join(shapes)}"
        f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' "
        f"stroke='#333'/><line x1='{left}' y1='{top}' x2='{left}' y2='{top + plot_h}' "
        f"stroke='#333'/>{ticks}"
        f"<text x='{left - 4}' y='{top + 8}' text-anchor='end'>{top_count:.0f}</text>"
        f"<text x='{left - 4}' y='{top + plot_h}' text-anchor='end'>0</text>"
        f"<text x='{left + plot_w / 2}' y='{height - 6}' text-anchor='middle'>score "
        "(rows: <tspan fill='#48c'>kept</tspan>, <tspan fill='#c44'>dropped</tspan>)"
        "</text></svg>"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(svg, encoding="utf-8")


def build_report(
    recipe: Recipe,
    steps: list[Any],
    summary: ShardSummary,
    metrics: dict[str, dict[str, float]],
    folder: Path,
) -> JobReport:
    """Counts per step and score histograms from the shards' merged summaries."""
    n = summary.rows
    counts = []
    gone = 0
    for i, (spec, _step) in enumerate(zip(recipe.steps, steps, strict=True)):
        rows_in = n - gone
        gone += summary.dropped.get(i, 0)
        reasons = summary.top_reasons(i, TOP_REASONS)
        counts.append(StepCount(spec.name, spec.type, rows_in, n - gone, reasons,
                                summary.step_rules(i)))
    folder.mkdir(parents=True, exist_ok=True)
    histograms, scores = {}, {}
    for name, sketch in summary.sketches.items():
        if not sketch.count:
            continue
        path = folder / f"hist-{_safe(name)}.svg"
        _histogram(name, sketch, path)
        histograms[name] = str(path)
        scores[name] = {"count": sketch.count, "mean": sketch.total / sketch.count,
                        "min": sketch.lo, "max": sketch.hi, "p50": sketch.quantile(0.5)}
    return JobReport(
        rows_read=n,
        rejects=summary.rejects,
        rows_kept=summary.kept,
        steps=counts,
        histograms=histograms,
        score_summary=scores,
        metrics=metrics,
        examples=summary.examples,
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
