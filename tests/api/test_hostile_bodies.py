"""Bad input is a 4xx everywhere (issue 26, findings 8, 10 and 11), as a hostile client sends
it, against a real server with keys set: JSON nested 1,500 deep, a message holding such JSON,
DPP asked for more demonstrations than a prompt could hold, a broken cache database."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import httpx
import pytest

from tests.api.conftest import LOCAL, make_app
from tests.api.servers import fault_backend, free_port, serve_app

KEY = {"Authorization": "Bearer bad-key", "content-type": "application/json"}
DEEP = "[" * 1500 + "]" * 1500  # 3 KB


@pytest.fixture(scope="module")
def server(provider, local_lm):
    with fault_backend() as (backend, _):
        app = make_app(provider, local_lm, api_keys=["bad-key"], routes={"mirror": backend},
                       compress_min_tokens=20)  # fmt: skip
        with serve_app(app) as base, httpx.Client(base_url=base, timeout=120) as client:
            records = [{"id": str(i), "text": f"example {i}"} for i in range(40)]
            made = client.post("/v1/pools", json={"name": "p", "records": records}, headers=KEY)
            assert made.status_code == 201, made.text
            yield client


def nested(field: str, base: dict) -> bytes:
    # The deep value spliced in as raw JSON text, as a client would send it.
    return json.dumps({**base, field: "__DEEP__"}).replace('"__DEEP__"', DEEP).encode()


ROUTES = {
    "chat": ("/v1/chat/completions", "messages", {"model": LOCAL}),
    "chat remote": ("/v1/chat/completions", "messages", {"model": "mirror"}),
    "completion": ("/v1/completions", "prompt", {"model": LOCAL}),
    "compress": ("/v1/compress", "messages", {}),
    "pools": ("/v1/pools", "records", {"name": "deep"}),
    "records": ("/v1/pools/p/records", "records", {}),
    "jobs": ("/v1/selection/jobs", "recipe", {}),
    "demonstrations": ("/v1/demonstrations", "query", {"pool": "p", "k": 2}),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_deep_json_is_a_400_naming_the_limit(server, route):
    path, field, base = ROUTES[route]
    response = server.post(path, content=nested(field, base), headers=KEY)
    assert response.status_code == 400, response.text[:300]  # before: RecursionError, a 500
    error = response.json()["error"]
    assert error["code"] == "json_too_deep" and "THRESHER_MAX_JSON_DEPTH" in error["message"]
    assert server.get("/v1/models", headers=KEY).status_code == 200  # the connection lives on


def test_deep_json_in_an_upload_recipe_is_a_400_naming_the_field(server):
    response = server.post(
        "/v1/selection/jobs/upload", files={"file": ("rows.jsonl", b'{"text": "a"}\n')},
        data={"recipe": DEEP}, headers={"Authorization": KEY["Authorization"]},
    )  # fmt: skip
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"]["param"] == "recipe"


def test_json_at_the_limit_passes(server):
    value: list = []
    for _ in range(60):
        value = [value]
    body = {"model": "mirror", "messages": [{"role": "user", "content": "hi"}], "deep": value}
    assert server.post("/v1/chat/completions", json=body, headers=KEY).status_code == 200


def test_a_deep_message_is_forwarded_as_it_is_and_the_rest_compressed(server, data_dir, caplog):
    """Before: one message holding deep JSON turned compression off for the whole request and
    logged about 180 KB of traceback each time."""
    story = json.loads((data_dir / "api" / "longqa_small.jsonl").open().readline())["context"]
    deep_text = f"The tool returned:\n{DEEP}\nThat is all of it, as it came back to us."
    messages = [{"role": "user", "content": deep_text}, {"role": "user", "content": story[:3000]}]
    body = {"model": "mirror", "messages": messages,
            "thresher": {"compression": {"rate": 0.3, "when": "always"}}}  # fmt: skip
    with caplog.at_level(logging.INFO):
        response = server.post("/v1/chat/completions", json=body, headers=KEY)
    assert response.status_code == 200, response.text[:300]
    sent = json.loads(response.json()["choices"][0]["message"]["content"])
    assert sent[0]["content"] == deep_text
    assert len(sent[1]["content"]) < 0.6 * len(story[:3000])
    stages = response.json()["thresher"]["stages"]
    assert [s["status"] for s in stages] == ["ran"]
    assert "RecursionError" not in caplog.text and len(caplog.text) < 20_000


@pytest.mark.parametrize("method", ["dpp", "mmr", "knn"])
def test_demonstrations_past_the_cap_are_a_422_naming_k(server, method):
    response = server.post(
        "/v1/demonstrations", json={"pool": "p", "query": "q", "k": 12_000, "method": method},
        headers=KEY,
    )  # fmt: skip
    assert response.status_code == 422, response.text[:300]  # before: DPP added 1.75 GB
    error = response.json()["error"]
    assert error["param"] == "k" and "THRESHER_MAX_DEMONSTRATIONS" in error["message"]


def serve(tmp_path, workers: int, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "THRESHER_DATA_DIR": str(tmp_path), "THRESHER_PRELOAD_MODELS": "false",
               **env}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "thresher", "serve", "--port", str(free_port()),
         "--workers", str(workers)],
        capture_output=True, text=True, env=environ, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("setting", ["compress_cache_path", "jobs_db"])
def test_a_broken_database_stops_serve_with_exit_2(tmp_path, workers, setting):
    """Before: a corrupt cache database exited 0 with --workers 2 (3 with one worker)."""
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"this is not a database" * 100)
    result = serve(tmp_path, workers, **{f"THRESHER_{setting.upper()}": str(broken)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"THRESHER_{setting.upper()}" in result.stderr and "Traceback" not in result.stderr
