"""A job as its tasks see it: the recipe, the shards, the plan and where files go.

A :class:`Job` travels to worker processes and Ray tasks without its steps: each process builds
its own once, through the registry (:func:`build_steps`), so models never travel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from thresher.core.errors import InputError, NotFoundError
from thresher.selection.io import ReadBatch, Shard, read_shard
from thresher.selection.outputs import PartLayout
from thresher.selection.plan import Op
from thresher.selection.recipe import InputSpec, Recipe
from thresher.selection.registry import Checked, StepContext, step_type
from thresher.selection.state import WorkDir


@dataclass
class Job:
    """Everything a task needs, picklable (worker processes and Ray tasks receive it)."""

    recipe: Recipe
    shards: list[Shard]
    specs: list[InputSpec]
    context: StepContext
    work: WorkDir
    passes: list[list[Op]]
    layout: PartLayout
    token: str = ""  # one run of the job: worker processes rebuild their steps for a new one
    schema: Any = None  # the input's arrow schema, for lossless parquet parts
    steps: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def read(
        self, shard: Shard, wanted: Callable[[int], bool] | None = None
    ) -> Iterator[ReadBatch]:
        spec = self.specs[shard.file_index]
        yield from read_shard(
            shard, spec, self.recipe.batch_size, strict=self.recipe.strict, wanted=wanted
        )

    def without_steps(self) -> Job:
        """The job as shipped to workers: they build their own steps (models never travel)."""
        return dataclasses.replace(self, steps=[], notes=[])


def build_steps(recipe: Recipe, context: StepContext, *, check: bool = False) -> list[Any]:
    """Instantiate every step once, through the registry (constructors store parameters only).

    With ``check`` (the driver, once per job), each :class:`Checked` step's ``check()`` runs
    too: the place for I/O that should fail a job before any work, such as a missing target
    file or a judge backend that does not answer.
    """
    steps = []
    for i, spec in enumerate(recipe.steps):
        try:
            step = step_type(spec.type).factory(spec.name, spec.params, context)
            if check and isinstance(step, Checked):
                step.check()
            steps.append(step)
        except (InputError, NotFoundError) as exc:
            # Same error class, but the field says which step of the recipe is at fault.
            field_name = f"steps[{i}].{exc.field or 'params'}"
            raise type(exc)(f"steps[{i}] ({spec.name}): {exc}", field=field_name) from exc
    return steps
