"""One import name: the top-level folders install as subpackages of ``thresher`` and nothing
in the repository imports them by their folder names."""

from __future__ import annotations

import ast
import json
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("core", "api", "compression", "prompting", "selection")


def test_every_package_folder_is_mapped_under_thresher():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"thresher": "thresher", **{f"thresher.{f}": f for f in FOLDERS}}
    found = {"thresher"} | {
        "thresher." + ".".join(init.parent.relative_to(REPO).parts)
        for folder in FOLDERS
        for init in (REPO / folder).rglob("__init__.py")
    }
    assert set(tool["packages"]) == found


def _sources() -> list[tuple[Path, str]]:
    out = []
    for path in REPO.rglob("*.py"):
        folders = path.relative_to(REPO).parts[:-1]
        # Not venvs (the benches make their own, e.g. bench/.venv-dsir), git or build output.
        if not any(f.startswith(".") or f in ("build", "dist") for f in folders):
            out.append((path, path.read_text(encoding="utf-8")))
    for path in (REPO / "notebooks").glob("*.ipynb"):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        out.append((path, code))
    return out


def test_nothing_imports_a_folder_name():
    bad = []
    for path, source in _sources():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            bad += [
                f"{path.relative_to(REPO)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in FOLDERS
            ]
    assert not bad, bad
