"""The ``thresher`` command line. Each command module registers itself on :data:`app`."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Annotated

import typer

from thresher.core.errors import InputError, NotFoundError, ThresherError

app = typer.Typer(
    name="thresher",
    help="Keep the grain, drop the chaff: data selection, demonstrations and prompt compression.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line to stderr and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def doctor(
    device: Annotated[
        str, typer.Option(help="Device to load on: auto, cpu, cuda, cuda:N, mps.")
    ] = "auto",
) -> None:
    """Report which models load, how long they take, where the caches are, and the device."""
    from thresher.core.device import resolve_device
    from thresher.core.models import ModelProvider
    from thresher.core.settings import load_settings
    from thresher.core.tokens import tiktoken_cache_dir

    settings = load_settings(device=device)
    provider = ModelProvider.from_settings(settings)
    typer.echo(f"python      {sys.version.split()[0]} ({sys.executable})")
    try:
        import torch

        typer.echo(f"torch       {torch.__version__}, cuda available: {torch.cuda.is_available()}")
    except ImportError:
        typer.echo("torch       not installed (pip install 'thresher[models]')")
    typer.echo(f"device      {device} -> {resolve_device(device)}")
    threads, dtype = provider.threads(), provider.compression_precision()
    typer.echo(f"threads     {threads.value}: {threads.reason}")
    typer.echo(f"dtype       {dtype.value} for compression's models: {dtype.reason}")
    typer.echo(f"cache dir   {provider.cache_dir}")
    typer.echo(f"tiktoken    {tiktoken_cache_dir()}")
    checks = {
        "embedder": lambda: provider.embedder(settings.embedder_model).encode(["doctor"]).shape,
        "scorer": lambda: len(provider.scorer(settings.scorer_model).token_logprobs(["doctor"])),
        "cl100k_base": lambda: provider.token_counter("cl100k_base").count("doctor"),
        "o200k_base": lambda: provider.token_counter("o200k_base").count("doctor"),
    }
    failed = 0
    for label, check in checks.items():
        start = time.perf_counter()
        try:
            check()
            typer.echo(f"ok    {label:<12} {time.perf_counter() - start:6.2f}s")
        except ThresherError as exc:
            failed += 1
            typer.echo(f"FAIL  {label:<12} {exc}")
    if failed:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default 8000).")] = None,
    backend: Annotated[
        str | None, typer.Option(help="'local' or an OpenAI-compatible base URL.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="The model to serve: a local model name, or the remote model's name."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes. Each builds its own models, backends, metrics and rate "
            "limits (shared when THRESHER_REDIS_URL is set); one selection-job worker runs at a "
            "time across them.",
        ),
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request (uvicorn).")] = True,
) -> None:
    """Serve the REST API and the OpenAI-compatible proxy."""
    import uvicorn

    from thresher.api.app import check_configured_models, check_stores, create_app
    from thresher.api.guard import UVICORN_OPTIONS
    from thresher.api.settings import service_settings

    remote = backend is not None and backend != "local"
    overrides = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "backend": backend,
            "backend_model" if remote else "local_model": model,
        }.items()
        if v is not None
    }
    settings = service_settings(**overrides)  # checked here: a bad value fails before forking
    check_configured_models(settings)
    check_stores(settings)
    # The guard reads client addresses itself (THRESHER_TRUSTED_PROXIES): uvicorn must not.
    run = {"host": settings.host, "port": settings.port, "log_level": "info", **UVICORN_OPTIONS}
    if workers == 1:
        app = create_app(settings, gc_tuning=True)
        uvicorn.run(app, access_log=access_log, **run)  # type: ignore[arg-type]
        return
    # Each worker process builds the app from the environment, so the options travel there.
    os.environ.update({f"THRESHER_{k.upper()}": str(v) for k, v in overrides.items()})
    uvicorn.run(  # type: ignore[arg-type]
        "thresher.api.app:served_app", factory=True, workers=workers, access_log=access_log, **run
    )


def command() -> typer.core.TyperGroup:  # type: ignore[name-defined]
    """The click command tree of :data:`app`, with help that reads at 80 columns."""
    from thresher.api.usage import plain_help

    return plain_help(typer.main.get_command(app))


def main(args: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning usage and Thresher errors into one line and an exit
    code (2: the caller's mistake, 1: a failure)."""
    from thresher.api.usage import abort_types, one_line, usage_error_types

    try:
        logging.basicConfig(level=_log_level())
        command().main(args=args, prog_name="thresher", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except usage_error_types() as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as asked
            typer.echo(exc.format_message(), err=True)  # type: ignore[attr-defined]
        else:
            typer.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(getattr(exc, "exit_code", 2) or 2)
    except abort_types():
        sys.exit(130)
    except (InputError, NotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ThresherError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


def _log_level() -> str:
    """THRESHER_LOG_LEVEL from the settings; WARNING while another THRESHER_* value is bad, so
    that ``--help`` still answers and a command that reads the settings names the bad one."""
    from thresher.core.settings import load_settings

    try:
        return str(load_settings().log_level)
    except ThresherError:
        return "WARNING"


# Command modules register themselves below, one line each (heavy imports stay inside commands).
import thresher.api.commands.select  # noqa: E402, F401, I001
import thresher.api.commands.filter  # noqa: E402, F401, I001
import thresher.api.commands.pool  # noqa: E402, F401, I001
import thresher.api.commands.compress  # noqa: E402, F401, I001
