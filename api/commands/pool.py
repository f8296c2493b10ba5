"""``thresher pool build|search``: demonstration pools from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from thresher.api.cli import app

pool_app = typer.Typer(help="Build and search demonstration pools.", no_args_is_help=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Where pools live (default: THRESHER_DATA_DIR or ./.thresher)."
    ),
]


def _store(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from thresher.core.models import ModelProvider
    from thresher.core.settings import load_settings
    from thresher.prompting import PoolStore

    settings = load_settings(**({"data_dir": data_dir} if data_dir else {}))
    provider = ModelProvider.from_settings(settings)

    def embedder():  # type: ignore[no-untyped-def]
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # errors stay one line on stderr
        return provider.embedder(settings.embedder_model)

    return PoolStore(settings.data_dir, embedder), provider, settings


@pool_app.command()
def build(
    name: Annotated[str, typer.Option(help="Pool name.")],
    input: Annotated[Path, typer.Option(help="JSON Lines file of demonstrations.")],
    text_field: Annotated[str, typer.Option(help="Field holding the input text.")] = "text",
    label_field: Annotated[str, typer.Option(help="Field holding the label.")] = "label",
    output_field: Annotated[
        str, typer.Option(help="Field holding a generation target.")
    ] = "output",
    replace: Annotated[bool, typer.Option(help="Overwrite a pool of the same name.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Embed a JSON Lines file into a named pool and save it."""
    from thresher.prompting import check_pool_name, read_demonstrations

    check_pool_name(name)
    store, _, _ = _store(data_dir)
    records = list(
        read_demonstrations(
            input, text_field=text_field, label_field=label_field, output_field=output_field
        )
    )
    pool = store.create(name, records, replace=replace)
    labels = f", {len(pool.labels_)} labels" if pool.labels_ else ""
    typer.echo(
        f"pool {name}: {len(pool)} records{labels}, {pool.index_.kind} index, "
        f"saved to {store.path(name)}"
    )


@pool_app.command()
def search(
    name: Annotated[str, typer.Option(help="Pool name.")],
    query: Annotated[str, typer.Option(help="The input to find demonstrations for.")],
    k: Annotated[int, typer.Option(min=1, help="How many demonstrations.")] = 4,
    method: Annotated[
        str, typer.Option(help="Retriever: random, bm25, knn, mmr, votek, dpp, label_balanced.")
    ] = "knn",
    order: Annotated[
        str, typer.Option(help="Order: similarity, reverse, random, entropy.")
    ] = "similarity",
    budget_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Assemble a prompt of at most this many tokens."),
    ] = None,
    model: Annotated[
        str, typer.Option(help="Target model whose tokenizer counts the budget.")
    ] = "cl100k_base",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Retrieve and order demonstrations for a query."""
    from thresher.prompting import demonstrate

    store, provider, settings = _store(data_dir)
    pool = store.get(name)
    found = demonstrate(
        pool,
        query,
        k,
        method=method,
        order=order,
        budget_tokens=budget_tokens,
        counter=provider.token_counter(model) if budget_tokens is not None else None,
        scorer=lambda: provider.scorer(settings.scorer_model),
    )
    if as_json:
        typer.echo(json.dumps(found.to_dict(), ensure_ascii=False))
        return
    for d in found.demonstrations:
        answer = d.label if d.label is not None else (d.output or "")
        typer.echo(f"{d.score:9.4f}  {d.id}  [{answer}]  {d.text[:100]}")
    if found.assembled is not None:
        typer.echo(f"\n--- prompt ({found.assembled.tokens} tokens) ---\n{found.assembled.prompt}")


app.add_typer(pool_app, name="pool")
