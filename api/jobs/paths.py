"""Where a submitted recipe may read and write: every file it names is checked before it runs.

A REST client must not make the service read or write an arbitrary file, nor call an address of
its choosing. Reads (inputs, DSIR targets, classifier folders, a local model folder, the recipe's
``base_dir``) must lie under the allowed roots (``THRESHER_JOBS_INPUT_ROOTS``, default the data
dir) or the job's own folder (its upload); the output stays inside the job's folder; a judge's
backend must be one this deployment already routes to. The walk goes by key names, so a step type
added later with a ``path`` or ``*_dir`` parameter is covered without a change here.

Thresher's own folders and files (every job's folder, every tenant's pools, the databases) are
never input, even when an input root holds them: a job reads its own folder and nothing else of
Thresher's, so one tenant cannot name another's upload or output by path. A refused path gets
the same answer whether it exists or not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from thresher.core.catalog import KNOWN_MODELS, canonical_name
from thresher.core.errors import InputError, NotFoundError

# Keys whose string value is a file or folder the engine will read.
PATH_KEYS = frozenset({"path", "paths", "base_dir", "file", "dir", "folder"})
PATH_SUFFIXES = ("_path", "_paths", "_dir", "_file", "_folder")


def _names_a_file(key: str) -> bool:
    return key in PATH_KEYS or key.endswith(PATH_SUFFIXES)


@dataclass(frozen=True)
class RecipeGuard:
    """Checks one validated recipe (its ``to_dict()``) against the deployment's limits.

    Args:
        read_roots: Folders a recipe may read from (resolved; symlinks followed).
        backends: Backend URLs a judge step may call (``local`` and the configured ones).
        private: Thresher's own folders and files (resolved): no job reads them, except its
            own folder.
    """

    read_roots: tuple[Path, ...]
    backends: frozenset[str]
    private: tuple[Path, ...] = ()

    def check(
        self, recipe: dict[str, Any], output_dir: Path, inputs_field: str | None = None
    ) -> None:
        """Raise :class:`InputError` naming the first field that points outside the limits.

        Args:
            recipe: The validated recipe as a dict, its ``base_dir`` set.
            output_dir: The job's own folder.
            inputs_field: The request field that set the inputs, if not the recipe's own.
        """
        # Another job's folder is not this job's to read: only its own joins the roots.
        own = output_dir.resolve()
        roots = (*self.read_roots, own)
        walls = (self.private, own)
        base = Path(_checked(recipe["base_dir"], "recipe.base_dir"))
        _readable(roots, base, "recipe.base_dir", walls)
        for index, spec in enumerate(recipe.get("inputs", [])):
            field = inputs_field or f"recipe.inputs[{index}].path"
            path = _resolve(base, spec["path"], field)
            _readable(roots, path, field, walls, must_exist=True)
        output = recipe.get("output", {}).get("path", "")
        target = (output_dir / _checked(output, "recipe.output.path")).resolve()
        if Path(output).is_absolute() or not target.is_relative_to(output_dir.resolve()):
            raise InputError(
                f"recipe.output.path {output!r} leaves the job's folder; give a relative file "
                "name (the results are downloaded from the job).",
                field="recipe.output.path",
            )
        for index, step in enumerate(recipe.get("steps", [])):
            self._check_step(step, base, f"recipe.steps[{index}]", roots, walls)

    def _check_step(
        self,
        step: dict[str, Any],
        base: Path,
        where: str,
        roots: tuple[Path, ...],
        walls: tuple[tuple[Path, ...], Path],
    ) -> None:
        for field, key, value in _strings(step, where):
            if _names_a_file(key):
                _readable(roots, _resolve(base, value, field), field, walls)
            elif key == "backend" and value.rstrip("/") not in self.backends:
                raise InputError(
                    f"{field} {value!r} is not a backend of this deployment; use one of "
                    f"{sorted(self.backends)} (THRESHER_BACKEND, THRESHER_ROUTES).",
                    field=field,
                )
            elif key == "model" and canonical_name(value) not in KNOWN_MODELS:
                # The model provider loads a local folder when the name is one: the same rule.
                folder = Path(_checked(value, field)).expanduser()
                if _private(folder.resolve(), walls) or folder.is_dir():
                    _readable(roots, folder, field, walls)


def _private(resolved: Path, walls: tuple[tuple[Path, ...], Path]) -> bool:
    private, own = walls
    return not resolved.is_relative_to(own) and any(
        resolved == p or resolved.is_relative_to(p) for p in private
    )


def _readable(
    roots: tuple[Path, ...],
    path: Path,
    field: str,
    walls: tuple[tuple[Path, ...], Path],
    *,
    must_exist: bool = False,
) -> None:
    # Messages name the field and a path relative to its root, never a resolved server path
    # or the roots themselves: an answer does not map the server's disk. A private path is
    # refused before its existence is looked at.
    resolved = path.resolve()
    root = next((r for r in roots if resolved.is_relative_to(r)), None)
    if root is None or _private(resolved, walls):
        raise InputError(
            f"{field} is outside the folders jobs may read; give a path relative to the data "
            "folder, upload the file instead, or have the operator add its folder to "
            "THRESHER_JOBS_INPUT_ROOTS.",
            field=field,
        )
    if must_exist and not resolved.exists():
        shown = resolved.relative_to(root).as_posix() or "."
        raise NotFoundError(f"{field} {shown!r} does not exist.", field=field)


# The endings the selection readers know a format by (selection/io.py), longest first.
UPLOAD_SUFFIXES = (".jsonl.gz", ".json.gz", ".ndjson.gz", ".jsonl", ".ndjson", ".json", ".parquet",
                   ".pq")  # fmt: skip
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
UPLOAD_STEM_CHARS = 80


def upload_name(filename: str | None) -> str:
    """The name an upload is stored under: the client's base name with every character but
    letters, digits, ``_ - .`` made ``_``, no leading dot, at most :data:`UPLOAD_STEM_CHARS`
    characters before its format's ending (which is kept, so the reader still knows it);
    ``input`` when nothing usable is left. A name with a control character is refused."""
    raw = filename or ""
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise InputError(
            "The upload's file name holds a control character; name the file plainly, e.g. "
            "rows.jsonl.",
            field="file",
        )
    base = PurePosixPath(raw.replace("\\", "/")).name
    lower = base.lower()
    suffix = next((s for s in UPLOAD_SUFFIXES if lower.endswith(s)), "")
    stem = _UNSAFE.sub("_", base[: len(base) - len(suffix)]).lstrip(".")[:UPLOAD_STEM_CHARS]
    if not stem.strip("_."):
        return "input" + (suffix or ".jsonl")
    return stem + suffix


def _checked(value: str, field: str) -> str:
    if "\x00" in value:  # no file name holds one, and Python raises on it
        raise InputError(f"{field} contains a NUL character; give a file name.", field=field)
    return value


def _resolve(base: Path, value: str, field: str) -> Path:
    path = Path(_checked(value, field)).expanduser()
    return path if path.is_absolute() else base / path


def _strings(value: Any, where: str, key: str = "") -> Iterator[tuple[str, str, str]]:
    """Every string in a nested step, as (field name, its key, value); list items keep the key
    of their list (``target: [a.jsonl]`` and ``target: [{path: a.jsonl}]`` both count)."""
    if isinstance(value, str):
        yield where, key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}", str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]", key)
