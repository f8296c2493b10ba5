"""MkDocs hook: lay out the ``thresher`` package as an install would, for mkdocstrings.

In the repository the subpackages are top-level folders (``core/``, ``api/``, ...) that
``pyproject.toml`` maps under ``thresher`` (setuptools ``package-dir``). griffe, which reads the
sources for the API reference, finds packages by folder, so before the build this hook makes
``build/docs-src/thresher/`` with links to those folders, read from the same ``package-dir``
table the wheel is built from; ``mkdocs.yml`` points mkdocstrings there.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / "build" / "docs-src"


def build_source_tree(repo: Path = REPO, tree: Path = TREE) -> Path:
    """Make ``tree/thresher`` mirror the installed package; returns ``tree``."""
    package_dir = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    if tree.exists():
        shutil.rmtree(tree)
    root = tree / package_dir["thresher"]
    root.mkdir(parents=True)
    for entry in (repo / package_dir["thresher"]).iterdir():
        if entry.name != "__pycache__":
            (root / entry.name).symlink_to(entry)
    for name, folder in package_dir.items():
        if name != "thresher":
            (tree / Path(*name.split("."))).symlink_to(repo / folder, target_is_directory=True)
    return tree


@event_priority(100)  # before mkdocstrings reads its search paths in its own on_config
def on_config(config: Any) -> Any:
    build_source_tree()
    return config
