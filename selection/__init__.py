"""Offline data selection for training sets: readers, scorers, filters, DSIR, executors.

The one entry point (CLI, API jobs and notebooks)::

    from thresher import selection
    result = selection.run_recipe("recipe.yaml", "out/", executor="local")
    result.report            # counts per step, histograms, kept/dropped examples
    result.output_path       # the kept rows, every original field kept

``from thresher import selection`` is light: pyarrow, ray, matplotlib and torch load only when a
job needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thresher.selection.recipe import Recipe, load_recipe
from thresher.selection.registry import StepContext, StepParams, register_step

if TYPE_CHECKING:
    from thresher.selection.engine import JobResult, run_recipe

__all__ = [
    "JobResult",
    "Recipe",
    "StepContext",
    "StepParams",
    "load_recipe",
    "register_step",
    "run_recipe",
]


def __getattr__(name: str) -> Any:
    if name in ("run_recipe", "JobResult"):
        from thresher.selection import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'thresher.selection' has no attribute {name!r}")
