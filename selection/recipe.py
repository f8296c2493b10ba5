"""Recipes: a pipeline of steps over input files, validated with pydantic.

A recipe (YAML, JSON or a dict)::

    inputs:
      - path: raw.jsonl            # jsonl, jsonl.gz, parquet, or a `datasets` folder
        shape: text                # auto | text | alpaca | sharegpt | openai
        text_field: text
    steps:
      - type: dsir                 # any registered step type (selection.registry)
        target: [target.jsonl]
        num: 2000
    output:
      path: selected.jsonl
      scores: inline               # inline (a `thresher` field) | side | none
    seed: 0

Unknown keys and bad values raise :class:`thresher.core.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from thresher.core.errors import ConfigError, NotFoundError
from thresher.selection.registry import StepParams, step_type

Shape = Literal["auto", "text", "alpaca", "sharegpt", "openai"]
FileFormat = Literal["auto", "jsonl", "jsonl.gz", "parquet", "hf"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Strict):
    """One input file (or `datasets` folder) and how to map its rows onto records."""

    path: str
    format: FileFormat = "auto"
    shape: Shape = "auto"
    text_field: str = "text"
    id_field: str = "id"


class OutputSpec(_Strict):
    """Where the kept rows go and where their scores go."""

    path: str = "selected.jsonl"
    format: FileFormat = "auto"
    scores: Literal["inline", "side", "none"] = "inline"
    score_field: str = "thresher"
    write_dropped: bool = Field(
        False, description="Also write dropped rows with their reason to dropped.jsonl."
    )
    sharded: bool = Field(
        False,
        description="Leave one file per input shard (part-00000.jsonl, ...) in a folder named "
        "after 'path' (and dropped/, scores/, rejects/) with a manifest.json, instead of "
        "joining them into single files; what a job on a cluster should write.",
    )


class StepSpec(BaseModel):
    """A step: its registered ``type``, an optional ``name`` and the type's own parameters."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    type: str
    name: str
    params: StepParams

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, **self.params.model_dump(mode="json")}


class Recipe(_Strict):
    """A whole selection job."""

    inputs: list[InputSpec] = Field(min_length=1)
    steps: list[StepSpec] = Field(default_factory=list)
    output: OutputSpec = Field(default_factory=OutputSpec)
    seed: int = 0
    batch_size: int = Field(1000, gt=0)
    workers: int = Field(
        1,
        ge=1,
        description="Processes for the local executor; Ray tasks at a time (unset: one per CPU "
        "of the cluster).",
    )
    strict: bool = False
    shard_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Split plain jsonl files.")
    base_dir: str | None = Field(None, description="Relative paths resolve here.")

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs(cls, value: Any) -> Any:
        if isinstance(value, str | dict):
            value = [value]
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value

    def resolve(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir or ".") / p

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"steps"})
        data["steps"] = [s.to_dict() for s in self.steps]
        return data

    def fingerprint(self) -> str:
        """A hash of everything that changes the output (a resumed job must match it)."""
        data = self.to_dict()
        # Neither changes a successful job's output: a strict run that stopped at a bad row can
        # be finished without --strict, and the worker count is free to change.
        data.pop("workers", None)
        data.pop("strict", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("params",) or str(part).startswith("function-"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "recipe"


def load_recipe(source: str | Path | dict[str, Any] | Recipe) -> Recipe:
    """Validate a recipe from a YAML/JSON path, a dict, or a :class:`Recipe`.

    Raises:
        ConfigError: naming the offending key (``field``) and what to write instead.
        NotFoundError: when a recipe path does not exist.
    """
    if isinstance(source, Recipe):
        return source
    base_dir: str | None = None
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise NotFoundError(f"Recipe file {str(path)!r} does not exist.", field="recipe")
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Recipe {path} is not valid YAML: {exc}", field="recipe") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"Recipe {path} must be a mapping at the top.", field="recipe")
        base_dir = str(path.resolve().parent)
    elif isinstance(source, dict):
        data = source
    else:
        raise ConfigError(f"Cannot read a recipe from {type(source).__name__}.", field="recipe")
    if base_dir is not None and "base_dir" not in data:
        data = {**data, "base_dir": base_dir}
    steps = data.get("steps")
    if isinstance(steps, list):
        specs = [_step_spec(i, s) for i, s in enumerate(steps)]
        for i, spec in enumerate(specs):
            if any(other.name == spec.name for other in specs[:i]):
                raise ConfigError(
                    f"Recipe key 'steps[{i}].name': the name {spec.name!r} is used by an earlier "
                    "step; give this one its own 'name'.",
                    field=f"steps[{i}].name",
                )
        data = {**data, "steps": specs}
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, ()) from None


def _step_spec(index: int, raw: Any) -> StepSpec:
    prefix = ("steps", index)
    if not isinstance(raw, dict):
        raise ConfigError(
            f"Recipe key 'steps[{index}]' must be a mapping with a 'type'.", field=f"steps[{index}]"
        )
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ConfigError(
            f"Recipe key 'steps[{index}].type' is missing; name a registered step type.",
            field=f"steps[{index}].type",
        )
    try:
        kind_spec = step_type(kind)
    except ConfigError as exc:
        raise ConfigError(
            f"Recipe key 'steps[{index}].type': {exc}", field=f"steps[{index}].type"
        ) from None
    params = {k: v for k, v in raw.items() if k not in ("type", "name", "params")}
    nested = raw.get("params") or {}
    if not isinstance(nested, dict):
        raise ConfigError(
            f"Recipe key 'steps[{index}].params' must be a mapping.", field=f"steps[{index}].params"
        )
    try:
        validated = kind_spec.params.model_validate({**nested, **params})
    except ValidationError as exc:
        raise _config_error(exc, prefix) from None
    name = raw.get("name") or kind
    if not isinstance(name, str):
        raise ConfigError(
            f"Recipe key 'steps[{index}].name' must be a string.", field=f"steps[{index}].name"
        )
    return StepSpec(type=kind, name=name, params=validated)


def _config_error(exc: ValidationError, prefix: tuple[Any, ...]) -> ConfigError:
    err = exc.errors()[0]
    where = _where(prefix + tuple(err["loc"]))
    if err["type"] == "extra_forbidden":
        return ConfigError(
            f"Unknown recipe key {where!r}; remove it or check its spelling.", field=where
        )
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return ConfigError(f"Recipe key {where!r}: {err['msg']}{shown}.", field=where)
