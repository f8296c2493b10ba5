"""Recipes shipped with Thresher (YAML package data), loaded by name."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from thresher.core.errors import NotFoundError


def builtin_recipe(name: str) -> dict[str, Any]:
    """The shipped recipe ``name`` as a dict (its ``inputs`` and ``output`` are to be filled)."""
    path = resources.files(__name__) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(
            p.name.removesuffix(".yaml")
            for p in resources.files(__name__).iterdir()
            if p.name.endswith(".yaml")
        )
        raise NotFoundError(f"No built-in recipe {name!r}; known: {known}.", field="recipe")
    return dict(yaml.safe_load(path.read_text(encoding="utf-8")))
