import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.state import AppState
from core.backends import LocalBackend
from core.settings import Settings


@pytest.fixture(scope="module")
def client(provider, local_lm, embedder, scorer):
    settings = Settings()
    state = AppState(
        settings=settings, provider=provider, backend=LocalBackend(local_lm, max_new_tokens=8)
    )
    with TestClient(create_app(settings, state=state)) as c:
        yield c


def test_healthz_names_the_loaded_models(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert any("SmolLM2-135M-Instruct" in m for m in body["models"])
    assert any("all-MiniLM-L6-v2" in m for m in body["models"])


def test_chat_pass_through(client):
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "SmolLM2-135M-Instruct",
            "temperature": 0,
            "max_tokens": 6,
            "messages": [{"role": "user", "content": "Say hello."}],
        },
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]


def test_chat_stream_is_server_sent_events(client):
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "m",
            "stream": True,
            "temperature": 0,
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[0].startswith("data: {") and lines[-1] == "data: [DONE]"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": "hi"}, "messages"),
    ],
)
def test_bad_chat_requests_get_openai_error_bodies(client, body, param):
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_malformed_json_is_a_400(client):
    response = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
