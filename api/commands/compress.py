"""``thresher compress``: compress a prompt from a file or stdin."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from thresher.api.cli import app
from thresher.compression import DEFAULT_METHOD
from thresher.core.errors import InputError


def read_input(source: str) -> str:
    """The text of ``source`` (a path, or ``-`` for stdin), which must be valid UTF-8."""
    if source == "-":
        data = sys.stdin.buffer.read()
        name = "stdin"
    else:
        path = Path(source)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise InputError(f"file {source!r} {what}; give a text file or -.", field="file")
        data = path.read_bytes()
        name = source
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name} is not valid UTF-8 (byte {exc.start}); convert it, e.g. with iconv.",
            field="file",
        ) from None


@app.command("compress")
def compress(
    file: Annotated[str, typer.Argument(help="Text file to compress, or - for stdin.")] = "-",
    rate: Annotated[
        float | None, typer.Option(help="Fraction of tokens kept, in (0, 1]; 0.33 is 3x.")
    ] = None,
    target_tokens: Annotated[
        int | None, typer.Option("--target-tokens", help="Token budget instead of --rate.")
    ] = None,
    question: Annotated[str | None, typer.Option(help="Question kept after the context.")] = None,
    instruction: Annotated[
        str | None, typer.Option(help="Instruction kept before the context.")
    ] = None,
    method: Annotated[
        str, typer.Option(help="llmlingua2, llmlingua, longllmlingua or selective-context.")
    ] = DEFAULT_METHOD,
    target_model: Annotated[
        str, typer.Option(help="Model or tiktoken encoding the rate is counted in.")
    ] = "cl100k_base",
    model: Annotated[
        str | None,
        typer.Option(
            help="llmlingua2 only: a Hugging Face token-classification folder (label 1 = keep)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Compress a prompt with an LLMLingua-family method and print it."""
    from thresher.api.routes.compress import build_compressor
    from thresher.compression import method_class, method_names
    from thresher.compression.budget import check_budget
    from thresher.core.models import ModelProvider
    from thresher.core.settings import load_settings

    if method not in method_names():
        raise InputError(
            f"Unknown method {method!r}; use one of {list(method_names())}.", field="method"
        )
    if model is not None and method_class(method).model != "token-classifier":
        raise InputError(
            f"--model names a token-classification folder and applies to llmlingua2 only, "
            f"not --method {method}.",
            field="model",
        )
    check_budget(rate, target_tokens)
    settings = load_settings()
    provider = ModelProvider.from_settings(settings)
    if model is not None:  # a bad folder fails before the input is read
        from thresher.core.catalog import token_classifier_folder

        token_classifier_folder(model, "model")
    text = read_input(file)
    compressor = build_compressor(
        method, settings, provider, provider.token_counter(target_model), model
    )
    result = compressor.compress(
        text, question=question, instruction=instruction, rate=rate, target_tokens=target_tokens
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    typer.echo(result.text)
    summary = result.note or f"dropped {len(result.kept_mask) - sum(result.kept_mask)} units"
    typer.echo(
        f"{method}: {result.origin_tokens} -> {result.compressed_tokens} tokens "
        f"({result.ratio:.2f}x); {summary}",
        err=True,
    )
