"""Atomic file writes, the one temp-then-rename rule every package uses.

A file is written under a temporary name beside it (unique to this process) and renamed onto its
name once whole, so a reader or a killed writer sees either the whole file or none, also with two
writers at once (a retried task and its original). Folders that replace folders (a saved pool, a
converted model) swap in their own steps, since a folder cannot be renamed onto another.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_name(path: Path) -> Path:
    """The temporary name beside ``path`` that this process writes it under."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name to write ``path`` under: renamed onto ``path`` when the block succeeds,
    removed when it fails."""
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
