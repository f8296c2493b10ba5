"""``thresher filter``: clean instruction data with the ``instruction-quality`` recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thresher.api.cli import app


@app.command("filter")
def filter_rows(
    input: Annotated[Path, typer.Option("--input", "-i", help="Alpaca/ShareGPT/messages file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the kept rows go.")],
    budget: Annotated[
        int | None, typer.Option(help="Keep at most N rows, chosen for diversity.", min=1)
    ] = None,
    judge_backend: Annotated[
        str | None,
        typer.Option(help="Rate rows with an LLM judge: 'local' or an OpenAI-compatible URL."),
    ] = None,
    judge_model: Annotated[str, typer.Option(help="Model name sent to the judge.")] = "judge",
    judge_optional: Annotated[
        bool, typer.Option(help="If the judge is down, record ratings as missing and go on.")
    ] = False,
    fresh: Annotated[bool, typer.Option(help="Discard an earlier run of this job.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    workers: Annotated[
        int, typer.Option(help="Processes (the input is split into shards for them).", min=1)
    ] = 1,
    keep_work: Annotated[
        bool, typer.Option(help="Keep the job's .work folder (checkpoints) after it succeeds.")
    ] = False,
) -> None:
    """Drop defective, duplicate rows (each with the rule that dropped it); optionally rate them
    with an LLM judge and keep a diverse subset of BUDGET rows."""
    from thresher.api.commands.select import run_and_report
    from thresher.core.errors import NotFoundError
    from thresher.selection.recipes import builtin_recipe

    if not input.exists():
        raise NotFoundError(f"--input {input} does not exist.", field="input")
    recipe = builtin_recipe("instruction-quality")
    if judge_backend is not None:
        recipe["steps"].append(
            {"type": "judge", "name": "judge", "backend": judge_backend, "model": judge_model,
             "optional": judge_optional}
        )  # fmt: skip
    if budget is not None:
        recipe["steps"].append({"type": "diversity", "name": "diversity", "budget": budget})
    recipe["inputs"] = [{"path": str(input.resolve()), "shape": "auto"}]
    if workers > 1:  # a few shards per worker; the kept rows do not depend on either
        recipe["workers"] = workers
        recipe["shard_bytes"] = max(1 << 20, input.stat().st_size // (4 * workers) + 1)
    recipe["output"] = {"path": str(out.resolve()), "scores": "inline", "write_dropped": True}
    folder = out.resolve().parent / f"{out.name}.thresher"
    run_and_report(recipe, folder, progress=progress, fresh=fresh, keep_work=keep_work)
