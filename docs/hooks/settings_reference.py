"""The settings reference (docs/settings.md), generated from the settings classes.

Every ``THRESHER_*`` field of :class:`thresher.core.settings.Settings` and
:class:`thresher.api.settings.ServiceSettings` becomes one row: the variable, its type and
constraints, its default and its description (the attribute docstring under the field). The
page is committed so that it reads on any checkout; ``make docs-settings`` (this file run as a
script) rewrites it, and both ``tests/test_docs_settings.py`` and the strict docs build fail when
it differs from what the classes say.
"""

from __future__ import annotations

import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "settings.md"

HEADER = """# Settings reference

<!-- Generated from the settings classes by docs/hooks/settings_reference.py: do not edit by
hand; run `make docs-settings` after changing a setting. -->

Every setting is an environment variable `THRESHER_<NAME>`, read when a command or the service
starts (never at import). Lists and dicts take JSON:

```sh
THRESHER_PORT=9000 THRESHER_API_KEYS='["key-1"]' \\
THRESHER_ROUTES='{"llama": "http://127.0.0.1:8080/v1"}' thresher serve
```

From Python, pass them as keywords: `Settings(port=9000)`, `ServiceSettings(api_keys=["key-1"])`.
A bad value stops startup with one line naming the variable.
"""

SECTIONS = (
    (
        "Core",
        "thresher.core.settings.Settings",
        "What every command, the library's `ModelProvider` and the service read: models, devices, "
        "folders, the default backend.",
    ),
    (
        "Service and proxy",
        "thresher.api.settings.ServiceSettings",
        "What `thresher serve` adds on top of the core settings: routing, the request pipeline, "
        "compression's limits, backends' retries, access control and selection jobs.",
    ),
)


def _settings_classes() -> dict[str, type]:
    from thresher.api.settings import ServiceSettings
    from thresher.core.settings import Settings

    return {
        "thresher.core.settings.Settings": Settings,
        "thresher.api.settings.ServiceSettings": ServiceSettings,
    }


def type_name(annotation: Any) -> str:
    """A short, readable name for a field's annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is dict:
        return f"dict[{type_name(args[0])}, {type_name(args[1])}]"
    if annotation is type(None):
        return "None"
    if annotation is typing.Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def constraints(field: Any) -> str:
    """``ge``/``gt``/``le``/``lt`` bounds of a field, as ``≥ 1, ≤ 64``."""
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    found = []
    for meta in field.metadata:
        for attr, sign in signs.items():
            value = getattr(meta, attr, None)
            if value is not None:
                found.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(found)


def default_text(field: Any) -> str:
    """The default as a user would write it; factories are called with no user environment."""
    if field.default_factory is not None:
        saved = {k: os.environ.pop(k) for k in ("THRESHER_CACHE_DIR", "XDG_CACHE_HOME")
                 if k in os.environ}  # fmt: skip
        try:
            value = field.default_factory()
        finally:
            os.environ.update(saved)
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return f"`~{text[len(home):]}`" if text.startswith(home + os.sep) else f"`{text}`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{value:g}`"
    return f"`{value}`"


def cell(text: str) -> str:
    """One Markdown table cell: one line, pipes escaped, reST literals as Markdown code."""
    return " ".join(text.split()).replace("|", "\\|").replace("``", "`")


def render() -> str:
    """The whole page, from the classes as they are now."""
    classes = _settings_classes()
    lines = [HEADER]
    seen: set[str] = set()
    for title, path, blurb in SECTIONS:
        cls = classes[path]
        lines += [f"## {title}", "", f"{blurb} (`{path}`)", ""]
        lines += ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
        for name, field in cls.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            kind = type_name(field.annotation)
            bounds = constraints(field)
            kind = f"{kind} ({bounds})" if bounds else kind
            description = field.description or ""
            lines.append(
                f"| `THRESHER_{name.upper()}` | {kind} | {default_text(field)} "
                f"| {cell(description)} |"
            )
        lines.append("")
    return "\n".join(lines[:-1]) + "\n"


def stale_message() -> str | None:
    """Why the committed page differs from the classes, or None when it is current."""
    if not PAGE.exists():
        return f"{PAGE.relative_to(REPO)} is missing; run `make docs-settings`."
    if PAGE.read_text(encoding="utf-8") != render():
        return (
            f"{PAGE.relative_to(REPO)} does not match the settings classes (a setting was added, "
            "removed or changed); run `make docs-settings` and commit the page."
        )
    return None


def on_pre_build(config: Any) -> None:
    from mkdocs.exceptions import PluginError

    message = stale_message()
    if message:
        raise PluginError(message)


if __name__ == "__main__":
    PAGE.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {PAGE.relative_to(REPO)}\n")
