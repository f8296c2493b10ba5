"""The README's first request, exactly as written, against the default deployment.

``make run`` is ``thresher serve`` with the default settings (the local SmolLM2 backend) on
127.0.0.1:8000. Here the README's code blocks run with only that address changed: in the default
suite against the default settings served in-process on the session's models, and in the slow
suite against ``thresher serve`` itself (``tests/test_wheel.py`` runs them once more against the
installed wheel).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_ADDRESS = "http://127.0.0.1:8000"


def readme_blocks(section: str) -> list[tuple[str, str]]:
    """The (language, code) blocks between the README's ``--8<-- [start:section]`` markers."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(f"--8<-- [start:{section}]", 1)[1].split(f"--8<-- [end:{section}]", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S)


def at(code: str, base_url: str) -> str:
    """The block with the README's address swapped for the test server's (and nothing else)."""
    assert code.count(README_ADDRESS) == 1, "the example must name make run's address once"
    return code.replace(README_ADDRESS, base_url)


def check_first_request(base_url: str, python: str = sys.executable) -> None:
    """Run the README's first request (curl, then the openai client) against ``base_url``."""
    blocks = dict(readme_blocks("first-request"))
    assert set(blocks) == {"sh", "python"}
    curl = subprocess.run(
        ["bash", "-c", at(blocks["sh"], base_url)], capture_output=True, text=True, timeout=300
    )
    assert curl.returncode == 0, curl.stderr
    answer = json.loads(curl.stdout)
    assert answer["model"] == "SmolLM2-135M-Instruct"
    assert answer["choices"][0]["message"]["content"].strip()
    assert 0 < answer["usage"]["completion_tokens"] <= 40
    client = subprocess.run(
        [python, "-c", at(blocks["python"], base_url)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert client.returncode == 0, client.stderr
    content, report = client.stdout.rstrip("\n").rsplit("\n", 1)
    assert content.strip()
    assert "tokens_before" in report and "stages" in report


def serve_env(data_dir: Path) -> dict[str, str]:
    """``make run``'s environment, less any ``THRESHER_*`` of the caller, with a data folder of
    the test's own, one torch thread (two contend on a crowded 2-core machine) and the models a
    plain chat does not use loaded on first use instead of at startup: the answer is the same."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRESHER_")}
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
        THRESHER_DATA_DIR=str(data_dir), THRESHER_TORCH_THREADS="1",
        THRESHER_PRELOAD_MODELS="false",
    )  # fmt: skip
    return env


@contextmanager
def thresher_serve(command: list[str], env: dict[str, str], cwd: Path) -> Iterator[str]:
    """``thresher serve`` on a free port as a process of its own; yields its base URL."""
    from tests.api.servers import free_port, wait_until_up

    port = free_port()
    proc = subprocess.Popen(
        [*command, "serve", "--port", str(port)], env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", timeout=300, process=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's example uses curl")
def test_readme_first_request_against_the_default_settings(provider, local_lm, tmp_path):
    from tests.api.conftest import make_app
    from tests.api.servers import serve_app

    app = make_app(provider, local_lm, data_dir=tmp_path)
    with serve_app(app) as url:
        check_first_request(url)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's example uses curl")
def test_readme_first_request_against_thresher_serve(tmp_path):
    with thresher_serve([sys.executable, "-m", "thresher"], serve_env(tmp_path), tmp_path) as url:
        check_first_request(url)
