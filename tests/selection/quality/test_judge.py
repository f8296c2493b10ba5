"""The judge against a real OpenAI-compatible server (the local SmolLM2 over HTTP on loopback)
and against a port where nothing listens."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from thresher.core.backends import LocalBackend, OpenAICompatibleBackend
from thresher.core.errors import BackendUnavailableError
from thresher.core.record import Record
from thresher.selection.quality.judge import LLMJudge, parse_rating

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(local_lm):
    import uvicorn
    from fastapi import FastAPI

    backend = LocalBackend(local_lm, max_new_tokens=16)
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": m} for m in await backend.models()]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        return await backend.chat(body)

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize(
    ("reply", "value"),
    [("Score: 4", 4.0), ("4/5 - accurate", 4.0), ("score=2.5 because", 2.5), ("great!", None),
     ("Score: 9", None)],
)  # fmt: skip
def test_parse_rating(reply, value):
    assert parse_rating(reply) == value


def test_judge_rates_through_a_real_server_or_says_why_not(server_url):
    rows = [
        Record("good", text="", metadata={"row": {"instruction": "Name the capital of France.",
                                                 "input": "", "output": "Paris."}}),
        Record("empty", text="", metadata={"row": {"instruction": "Name a colour.",
                                                  "input": "", "output": ""}}),
    ]  # fmt: skip
    judge = LLMJudge(lambda: OpenAICompatibleBackend(server_url), concurrency=2, retries=1)
    asyncio.run(judge.check())
    scores = judge.score(rows)
    assert math.isnan(scores[1]) and "empty response" in judge.reasons_["empty"]
    # A 135M judge may not answer in the rubric's format: then the rating is missing, with the
    # reply quoted, never a made-up default.
    assert (0 <= scores[0] <= 5) or judge.reasons_["good"].startswith("unparseable rating")


def test_down_backend_fails_fast_with_a_clear_message():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    judge = LLMJudge(lambda: OpenAICompatibleBackend(url), retries=0)
    with pytest.raises(BackendUnavailableError, match="--judge-optional"):
        asyncio.run(judge.check())
    rows = [Record("r", text="", metadata={"row": {"instruction": "Hi", "output": "Hello"}})]
    assert math.isnan(judge.score(rows)[0])
    assert judge.reasons_["r"].startswith("judge failed")


def _filter(tmp_path, instructions_path, *extra):
    out = tmp_path / "kept.jsonl"
    cmd = [sys.executable, "-m", "thresher", "filter", "--input", str(instructions_path),
           "--out", str(out), "--no-progress", *extra]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600), out


def test_cli_filter_drops_rows_with_their_rule(tmp_path, instructions_path, labels):
    done, out = _filter(tmp_path, instructions_path)
    assert done.returncode == 0, done.stderr
    kept = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    dropped = [json.loads(line) for line in (tmp_path / "kept.jsonl.thresher" / "dropped.jsonl")
               .read_text().splitlines()]  # fmt: skip
    assert len(kept) + len(dropped) == 365
    assert all(d["reason"] for d in dropped)
    gone = {d["id"] for d in dropped}
    defects = [i for i, row in labels.items() if "duplicate" not in row["defect"]]
    assert all(i in gone for i in defects)
    assert all(i not in kept for i in defects)
    assert "kept" in done.stdout


def test_cli_filter_with_a_down_judge(tmp_path, instructions_path):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    done, _ = _filter(tmp_path, instructions_path, "--judge-backend", url)
    assert done.returncode != 0
    assert "does not answer" in done.stderr and "Traceback" not in done.stderr
    done, out = _filter(tmp_path, instructions_path, "--judge-backend", url, "--judge-optional",
                        "--fresh")  # fmt: skip
    assert done.returncode == 0, done.stderr
    first = json.loads(out.read_text().splitlines()[0])
    assert first["thresher"].get("judge") is None
