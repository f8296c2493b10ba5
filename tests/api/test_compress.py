"""POST /v1/compress and `thresher compress`: errors, and parity with the Python call."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from thresher.api.app import create_app
from thresher.api.state import AppState
from thresher.compression import load_compressor
from thresher.core.backends import LocalBackend
from thresher.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(provider, local_lm):
    settings = Settings()
    state = AppState(
        settings=settings, provider=provider, backend=LocalBackend(local_lm, max_new_tokens=8)
    )
    with TestClient(create_app(settings, state=state)) as c:
        yield c


@pytest.fixture(scope="module")
def story(data_dir):
    return json.loads((data_dir / "longqa_small.jsonl").open().readline())


def test_compress_returns_counts_and_kept_spans(client, story):
    response = client.post(
        "/v1/compress",
        json={"context": story["context"], "question": story["question"], "rate": 0.4},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["origin_tokens"] > body["compressed_tokens"] > 0
    assert body["ratio"] == pytest.approx(body["origin_tokens"] / body["compressed_tokens"], 1e-3)
    original = story["context"] + "\n\n" + story["question"]
    spans = body["kept"]
    assert spans and all(0 <= a < b <= len(original) for a, b in spans)
    assert body["compressed"].endswith(story["question"])


def test_compress_messages(client, story):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": story["context"]},
        {"role": "assistant", "content": "I read it."},
        {"role": "user", "content": story["question"]},
    ]
    body = client.post("/v1/compress", json={"messages": messages, "rate": 0.5}).json()
    assert [m["role"] for m in body["messages"]] == [m["role"] for m in messages]
    assert body["messages"][-1]["content"] == story["question"]


def test_short_prompt_is_unchanged(client):
    body = client.post("/v1/compress", json={"context": "Tiny prompt.", "rate": 0.5}).json()
    assert body["ratio"] == 1.0 and body["compressed"] == "Tiny prompt." and body["note"]


@pytest.mark.parametrize(
    "payload, param",
    [
        ({"context": "text", "rate": 1.5}, "rate"),
        ({"context": "text", "rate": 0}, "rate"),
        ({"context": "text", "target_tokens": 0}, "target_tokens"),
        ({"context": ""}, "context"),
        ({"context": "text", "method": "zip"}, "method"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"rate": 0.5}, "context"),
    ],
)
def test_bad_input_is_422_with_the_field(client, payload, param):
    response = client.post("/v1/compress", json=payload)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_invalid_utf8_body_is_rejected(client):
    response = client.post(
        "/v1/compress",
        content=b'{"context": "caf\xe9 au lait", "rate": 0.5}',
        headers={"content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert "error" in response.json()


def run_cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "thresher", "compress", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["--rate", "2"], b"text", "rate must be in (0, 1]"),
        (["--target-tokens", "0"], b"text", "target_tokens must be positive"),
        (["no-such-file.txt"], None, "does not exist"),
        (["-"], b"caf\xe9", "not valid UTF-8"),
        (["--method", "zip"], b"text", "Unknown method 'zip'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args, stdin, message):
    result = run_cli(*args, stdin=stdin)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_cli_api_and_python_agree(client, provider, counter, story, tmp_path):
    """The same prompt through the three ways in gives the same compression."""
    path = tmp_path / "story.txt"
    path.write_text(story["context"], encoding="utf-8")
    args = ["--rate", "0.4", "--question", story["question"], "--method", "llmlingua"]
    cli = run_cli(str(path), *args, "--json")
    assert cli.returncode == 0, cli.stderr.decode()
    from_cli = json.loads(cli.stdout)
    from_api = client.post(
        "/v1/compress",
        json={
            "context": story["context"],
            "question": story["question"],
            "rate": 0.4,
            "method": "llmlingua",
        },
    ).json()
    compressor = load_compressor("llmlingua", provider, counter=counter)
    from_python = compressor.compress(story["context"], question=story["question"], rate=0.4)
    for key in ("compressed", "origin_tokens", "compressed_tokens", "ratio"):
        assert from_cli[key] == from_api[key] == from_python.to_dict()[key], key


def test_the_proxy_and_the_route_compress_with_one_scorer(client, provider):
    from thresher.api.routes.compress import build_compressor

    state = client.app.state.thresher
    route_model = build_compressor("llmlingua", state.settings, provider).scorer.model
    # The proxy's stage asks the provider the same way: the same wrapper and model, loaded once.
    scorer = provider.compression_scorer(state.settings.scorer_model)
    assert scorer.model is route_model and provider.compression_scorer() is scorer


def test_llmlingua2_through_the_api(client, story):
    body = client.post(
        "/v1/compress",
        json={
            "context": story["context"],
            "question": story["question"],
            "rate": 0.4,
            "method": "llmlingua2",
        },
    ).json()
    assert body["method"] == "llmlingua2"
    assert body["origin_tokens"] > body["compressed_tokens"] > 0
    assert body["compressed"].endswith(story["question"])


def test_a_model_the_deployment_does_not_offer_is_one_422_naming_model(client, provider, tmp_path):
    """Finding 3 of issue 26: a path, a model folder of the server's or a missing one answer
    alike, naming what is allowed; nothing of the disk (no listing, no config value)."""
    from thresher.core.catalog import causal_lm_path

    lm = str(causal_lm_path("SmolLM2-135M-Instruct", provider.cache_dir))
    answers = set()
    for model in ["/root", str(tmp_path / "nope"), lm, "/etc", "../../etc", "~"]:
        response = client.post(
            "/v1/compress", json={"context": "some text", "method": "llmlingua2", "model": model}
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["param"] == "model" and "thresher-llmlingua2-minilm" in error["message"]
        said = error["message"].replace(repr(model), "<model>")  # beyond the client's own words
        for leak in (".bashrc", ".cache", "config.json", "found", "Llama", str(tmp_path)):
            assert leak not in said, error
        answers.add(said)
    assert len(answers) == 1  # nothing tells one case from another
    response = client.post(
        "/v1/compress", json={"context": "some text", "method": "llmlingua", "model": "x"}
    )
    assert response.status_code == 422 and "llmlingua2 only" in response.json()["error"]["message"]
    assert "SmolLM2" not in response.json()["error"]["message"]  # no setting's value


def test_models_under_the_configured_root_or_by_name(provider, local_lm, tmp_path):
    from tests.api.conftest import make_app
    from thresher.core.catalog import causal_lm_path

    root = tmp_path / "models"
    (root / "empty").mkdir(parents=True)
    lm = causal_lm_path("SmolLM2-135M-Instruct", provider.cache_dir)
    (root / "escape").symlink_to(lm)  # a link out of the root is not under it
    embedded = provider.token_classifier()  # a real two-label classifier, saved as a folder
    embedded.model.save_pretrained(root / "team" / "mine")
    embedded.tokenizer.save_pretrained(root / "team" / "mine")
    app = make_app(provider, local_lm, models_root=root, compress_models={"lm": lm})
    text = "The meeting moved to Thursday because the room was booked on Wednesday. " * 40
    with TestClient(app) as c:
        ok = c.post(
            "/v1/compress",
            json={"context": text, "method": "llmlingua2", "model": "team/mine", "rate": 0.5},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["compressed_tokens"] < ok.json()["origin_tokens"]
        for model in ["empty", "escape", "lm", "../models/empty"]:
            response = c.post(
                "/v1/compress",
                json={"context": "some text", "method": "llmlingua2", "model": model},
            )
            assert response.status_code == 422, response.text
            message = response.json()["error"]["message"]
            assert "THRESHER_MODELS_ROOT" in message and "'lm'" in message
            assert str(root) not in message and str(lm) not in message


def test_cli_model_flag_errors(tmp_path):
    result = run_cli("--method", "llmlingua2", "--model", str(tmp_path / "nope"), stdin=b"text")
    err = result.stderr.decode()
    assert result.returncode == 2 and "found nothing" in err and "Traceback" not in err
    result = run_cli("--method", "llmlingua", "--model", str(tmp_path), stdin=b"text")
    assert result.returncode == 2 and "llmlingua2 only" in result.stderr.decode()
