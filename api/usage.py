"""Usage errors and help of the ``thresher`` command line, in one place.

typer raises the exceptions of the click it bundles (``typer._click`` since 0.29, ``click``
before), so the classes are found from ``typer.BadParameter``'s own module, not imported by name:
a dependency upgrade cannot again turn every usage error into a traceback.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

import typer


def click_exceptions() -> list[ModuleType]:
    """The exception modules of every click that may raise here (typer's bundled one first)."""
    modules = [sys.modules[typer.BadParameter.__module__]]
    try:
        import click.exceptions as plain

        if plain not in modules:
            modules.append(plain)
    except ImportError:  # pragma: no cover - typer 0.29 no longer needs click
        pass
    return modules


def usage_error_types() -> tuple[type[BaseException], ...]:
    return tuple(m.ClickException for m in click_exceptions())


def abort_types() -> tuple[type[BaseException], ...]:
    return tuple(m.Abort for m in click_exceptions() if hasattr(m, "Abort"))


def one_line(exc: Any) -> str:
    """A click usage error as one line: the command, the flag, what is wrong and the fix."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "thresher"
    see = f"see '{path} --help'"
    kind = type(exc).__name__
    param = getattr(exc, "param", None)
    hint = _hint(exc, param)
    message = str(getattr(exc, "message", "") or "").strip().rstrip(".")
    if kind == "MissingParameter":
        what = getattr(param, "param_type_name", "parameter")
        help_text = (getattr(param, "help", None) or "").strip().rstrip(".")
        about = f" ({help_text})" if help_text else ""
        return f"{path}: missing {what} {hint}{about}; give it, {see}."
    if kind == "BadParameter" or (param is not None and hint):
        return f"{path}: invalid value for {hint}: {message}; {see}."
    if kind == "NoSuchOption":
        name = getattr(exc, "option_name", "")
        close = sorted(getattr(exc, "possibilities", None) or [])
        fix = f"did you mean {' or '.join(close)}?" if close else "drop it"
        return f"{path}: no such option {name}; {fix} ({see})."
    text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return f"{path}: {' '.join(str(text).split()).rstrip('.')}; {see}."


def _hint(exc: Any, param: Any) -> str:
    hint = getattr(exc, "param_hint", None)
    if hint is None and param is not None:
        opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        if getattr(param, "param_type_name", "") == "argument":
            return str(param.name).upper()
        hint = opts[0] if opts else getattr(param, "name", "")
    if isinstance(hint, list | tuple):
        hint = " / ".join(str(h) for h in hint)
    return str(hint or "").strip("'\"")


def plain_help(command: Any) -> Any:
    """Help that reads at 80 columns: click's own wrapping, no rich table, and a value's
    placeholder named after the option (``--num NUM``), as argparse writes it, not its type
    (``INTEGER RANGE``). Walks the command tree once."""
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None  # click's formatter: words wrap whole at the width
    for module in click_exceptions():
        try:
            wrap = importlib.import_module(module.__name__.rpartition(".")[0] + "._textwrap")
        except ImportError:  # pragma: no cover
            continue
        if not getattr(wrap.TextWrapper, "whole_words", False):
            wrap.TextWrapper = _whole_words(wrap.TextWrapper)
    for param in getattr(command, "params", []):
        kind = getattr(param, "param_type_name", "")
        if kind not in ("option", "argument") or param.metavar is not None:
            continue
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        if kind == "argument":  # its name is its placeholder already (``FILE``); no type
            param.display_type_rich = lambda ctx: None
        else:
            param.metavar = str(param.name).upper()
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)
    return command


def _whole_words(base: type) -> type:
    """click's help wrapper, breaking lines between words only: ``[default: no-strict]`` and
    ``selective-context`` stay whole (textwrap breaks at hyphens by default)."""

    class WholeWords(base):  # type: ignore[misc, valid-type]
        whole_words = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("break_on_hyphens", False)
            super().__init__(*args, **kwargs)

    return WholeWords
