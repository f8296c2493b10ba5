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
