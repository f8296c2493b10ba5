"""Pools over the three ways in: the CLI, the REST API and Python give the same answers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from thresher.api.app import create_app
from thresher.api.state import AppState
from thresher.core.backends import LocalBackend
from thresher.core.settings import Settings
from thresher.prompting import PoolStore, demonstrate

ROOT = Path(__file__).resolve().parents[2]
SEARCHES = [
    {
        "query": "will it be sunny in Lyon on Sunday",
        "k": 4,
        "method": "knn",
        "order": "similarity",
        "budget_tokens": 120,
    },
    {"query": "play the new album by Daft Punk", "k": 3, "method": "random", "order": "random"},
]


def cli(*args, data_dir):
    return subprocess.run(
        [sys.executable, "-m", "thresher", "pool", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("pools")
    source = folder / "intent.jsonl"
    lines = (data_dir / "prompting" / "intent_pool.jsonl").read_text().splitlines()[:60]
    source.write_text("\n".join(lines) + "\n")
    result = cli("build", "--name", "intent", "--input", str(source), data_dir=folder)
    assert result.returncode == 0, result.stderr
    assert "pool intent: 60 records, 7 labels, flat index" in result.stdout
    return folder


@pytest.fixture(scope="module")
def client(built, provider, local_lm, embedder):
    settings = Settings(data_dir=built)
    state = AppState(settings=settings, provider=provider, backend=LocalBackend(local_lm))
    with TestClient(create_app(settings, state=state)) as c:
        yield c


def cli_flags(search):
    flags = [
        "--query",
        search["query"],
        "--k",
        str(search["k"]),
        "--method",
        search["method"],
        "--order",
        search["order"],
        "--json",
    ]
    if "budget_tokens" in search:
        flags += ["--budget-tokens", str(search["budget_tokens"])]
    return flags


@pytest.mark.parametrize("search", SEARCHES, ids=lambda s: s["method"])
def test_cli_api_and_python_agree(built, client, embedder, counter, search):
    result = cli("search", "--name", "intent", *cli_flags(search), data_dir=built)
    assert result.returncode == 0, result.stderr
    from_cli = json.loads(result.stdout)
    response = client.post("/v1/demonstrations", json={"pool": "intent", **search})
    assert response.status_code == 200, response.text
    from_api = response.json()
    python = demonstrate(
        PoolStore(built, embedder).get("intent"),
        search["query"],
        search["k"],
        method=search["method"],
        order=search["order"],
        budget_tokens=search.get("budget_tokens"),
        counter=counter,
    ).to_dict()
    ids = [[d["id"] for d in body["demonstrations"]] for body in (from_cli, from_api, python)]
    assert ids[0] == ids[1] == ids[2] and 1 <= len(ids[0]) <= search["k"]
    assert from_cli.get("prompt") == from_api.get("prompt") == python.get("prompt")
    if "budget_tokens" in search:
        assert from_api["tokens"] <= search["budget_tokens"]
        assert from_api["prompt"].endswith(f"Input: {search['query']}\nLabel:")
    for d in from_api["demonstrations"]:
        assert set(d) >= {"id", "text", "label", "score"}


def test_create_and_add_records_over_rest(client):
    records = [
        {"id": "a", "text": "What is the weather in Oslo", "label": "get_weather"},
        {"id": "b", "text": "Play something by Nina Simone", "label": "play_music"},
    ]
    response = client.post("/v1/pools", json={"name": "tiny", "records": records})
    assert response.status_code == 201, response.text
    assert response.json() == {
        "name": "tiny",
        "size": 2,
        "labels": ["get_weather", "play_music"],
        "index": "flat",
    }
    response = client.post(
        "/v1/pools/tiny/records",
        json={"records": [{"id": "c", "text": "Book a table for two", "label": "book_restaurant"}]},
    )
    assert response.status_code == 200 and response.json()["size"] == 3
    body = client.post("/v1/demonstrations", json={"pool": "tiny", "query": "table for 2", "k": 1})
    assert body.json()["demonstrations"][0]["id"] == "c"
    again = client.post("/v1/pools", json={"name": "tiny", "records": records})
    assert again.status_code == 422 and again.json()["error"]["param"] == "name"


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"pool": "ghost", "query": "hi", "k": 2}, 404, "pool"),
        ({"pool": "intent", "query": "hi", "k": 0}, 422, "k"),
        ({"pool": "intent", "query": "hi", "k": 61}, 422, "k"),
        ({"pool": "intent", "query": "  ", "k": 2}, 422, "query"),
        ({"pool": "intent", "query": "hi", "k": 2, "budget_tokens": 5}, 422, "budget_tokens"),
        ({"pool": "intent", "query": "hi", "k": 2, "method": "oracle"}, 422, "method"),
        ({"pool": "intent", "query": "hi", "k": 2, "order": "alphabetical"}, 422, "order"),
    ],
)
def test_bad_requests_get_openai_error_bodies(client, body, status, param):
    response = client.post("/v1/demonstrations", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"]


def test_cli_errors_are_one_line_and_exit_2(built):
    for args in (
        ["search", "--name", "ghost", "--query", "hi"],
        ["search", "--name", "intent", "--query", "hi", "--k", "0"],
    ):
        result = cli(*args, data_dir=built)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert (
            len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
        )
