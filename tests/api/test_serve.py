"""``thresher serve`` as a real process in front of a real loopback backend."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import openai
import pytest

from tests.api.servers import fault_backend, free_port, wait_until_up


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_proxies_to_the_backend_it_was_given(tmp_path, workers):
    port = free_port()
    env = {**os.environ, "THRESHER_DATA_DIR": str(tmp_path), "THRESHER_PRELOAD_MODELS": "false"}
    with fault_backend() as (backend, _):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "thresher",
                "serve",
                "--port",
                str(port),
                "--backend",
                backend,
                "--model",
                "ok",
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz", process=proc)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
            assert [m.id for m in client.models.list()] == ["ok"]
            answer = client.chat.completions.create(
                model="ok", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer.choices[0].message.content == "echo 1 messages"
            # Every worker process routes the same way (each built it from the environment).
            for _ in range(6):
                again = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "ok", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert again.status_code == 200
            other = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert other.status_code == 404  # only the named model is routable
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_serve_rejects_a_bad_backend_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "thresher", "serve", "--backend", "ftp://somewhere"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "THRESHER_BACKEND" in result.stderr and "Traceback" not in result.stderr


def start_serve(tmp_path, *args: str, **env: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    environ = {**os.environ, "THRESHER_DATA_DIR": str(tmp_path), **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "thresher", "serve", "--port", str(port), *args],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base}/healthz", timeout=180, process=proc)
    return proc, base


def test_serve_believes_no_forwarded_header_it_was_not_told_to(tmp_path):
    """Issue 26, finding 6: uvicorn's default believes X-Forwarded-For from loopback, so wrong
    keys with a fresh header each were never limited; `thresher serve` turns that off."""
    proc, base = start_serve(
        tmp_path, THRESHER_PRELOAD_MODELS="false", THRESHER_API_KEYS='["right"]',
        THRESHER_AUTH_FAILURES_PER_MINUTE="3",
    )  # fmt: skip
    try:
        statuses = [
            httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer guess",
                                                    "X-Forwarded-For": f"10.9.0.{i}"}).status_code
            for i in range(6)
        ]  # fmt: skip
        assert statuses[:3] == [401] * 3 and statuses[3:] == [429] * 3
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_sigterm_does_not_wait_for_work_nobody_waits_for(tmp_path, data_dir):
    """Issue 26, finding 9: a client that left /v1/compress after 2 s left 105 s of work, and
    SIGTERM then hung at "Waiting for background tasks"."""
    import json
    import signal
    import time

    proc, base = start_serve(tmp_path, THRESHER_PRELOAD_MODELS="true")
    story = json.loads((data_dir / "api" / "longqa_small.jsonl").open().readline())["context"]
    body = {"context": story * 3, "rate": 0.5, "method": "llmlingua", "deadline_ms": 300_000}
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/v1/compress", json=body, timeout=2.0)
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        proc.wait(timeout=30)
        assert time.monotonic() - start < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
