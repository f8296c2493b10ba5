"""``thresher select RECIPE.yaml`` and the DSIR shortcut ``thresher dsir``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thresher.api.cli import app

Executor = Annotated[str, typer.Option(help="Where to run: local or ray.")]
Address = Annotated[
    str | None,
    typer.Option(
        help="The Ray cluster for --executor ray: host:port of its head, or ray://host:10001 "
        "(default: RAY_ADDRESS, else a Ray started on this machine).",
    ),
]
KeepWork = Annotated[
    bool, typer.Option(help="Keep the job's .work folder (checkpoints) after it succeeds.")
]


@app.command("select")
def select(
    recipe: Annotated[Path, typer.Argument(help="A recipe file (YAML or JSON).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Job folder (default: next to the recipe).")
    ] = None,
    executor: Executor = "local",
    address: Address = None,
    strict: Annotated[bool, typer.Option(help="Make unreadable rows fatal.")] = False,
    fresh: Annotated[bool, typer.Option(help="Discard an earlier run in the job folder.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    keep_work: KeepWork = False,
) -> None:
    """Run a selection recipe; running it again with the same folder resumes it."""
    folder = out if out is not None else recipe.parent / f"{recipe.stem}.out"
    run_and_report(
        recipe, folder, executor=executor, address=address, progress=progress, fresh=fresh,
        strict=strict, keep_work=keep_work,
    )  # fmt: skip


@app.command("dsir")
def dsir(
    raw: Annotated[list[Path], typer.Option("--raw", help="Raw data files (repeatable).")],
    target: Annotated[list[Path], typer.Option("--target", help="Target files (repeatable).")],
    num: Annotated[int, typer.Option("--num", help="Rows to select.", min=1)],
    out: Annotated[Path, typer.Option("--out", help="Output file (jsonl, jsonl.gz, parquet).")],
    ngrams: Annotated[int, typer.Option(help="Largest n-gram order.", min=1, max=5)] = 2,
    buckets: Annotated[int, typer.Option(help="Hash buckets.", min=16)] = 10000,
    seed: Annotated[int, typer.Option(help="Random seed of the Gumbel noise.")] = 0,
    executor: Executor = "local",
    address: Address = None,
    text_field: Annotated[str, typer.Option(help="Field holding the text.")] = "text",
    top_k: Annotated[bool, typer.Option(help="Keep the top weights instead of sampling.")] = False,
    workers: Annotated[int, typer.Option(help="Local worker processes.", min=1)] = 1,
    strict: Annotated[bool, typer.Option(help="Make unreadable rows fatal.")] = False,
    fresh: Annotated[bool, typer.Option(help="Discard an earlier run of this job.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Select NUM rows of RAW that look like TARGET (DSIR importance resampling)."""
    recipe = {
        "inputs": [
            {"path": str(p.resolve()), "text_field": text_field, "shape": "text"} for p in raw
        ],
        "steps": [
            {
                "type": "dsir",
                "num": num,
                "ngrams": ngrams,
                "buckets": buckets,
                "method": "topk" if top_k else "gumbel",
                "target": [
                    {"path": str(p.resolve()), "text_field": text_field, "shape": "text"}
                    for p in target
                ],
            }
        ],
        "output": {"path": str(out.resolve()), "scores": "inline"},
        "seed": seed,
        "workers": workers,
    }
    folder = out.resolve().parent / f"{out.name}.thresher"
    run_and_report(recipe, folder, executor=executor, address=address, progress=progress,
                   fresh=fresh, strict=strict)  # fmt: skip


def run_and_report(
    recipe: object,
    folder: Path,
    *,
    executor: str = "local",
    address: str | None = None,
    progress: bool = True,
    fresh: bool = False,
    strict: bool = False,
    keep_work: bool = False,
) -> None:
    """Run a recipe (resuming an unfinished job in ``folder``) and print where things went."""
    from thresher import selection

    result = selection.run_recipe(
        recipe,  # type: ignore[arg-type]
        folder,
        executor=executor,  # type: ignore[arg-type]
        address=address,
        progress=progress,
        fresh=fresh,
        strict=strict or None,
        keep_work=keep_work,
    )
    if result.resumed:
        typer.echo("resumed the unfinished job found in the output folder")
    typer.echo(f"wrote {result.output_path} (report: {result.report_dir / 'report.html'})")
    if result.rejects_path is not None:
        typer.echo(f"bad rows: {result.rejects_path}")
    typer.echo(result.summary())
