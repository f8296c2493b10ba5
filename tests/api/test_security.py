"""API keys, body size limit, per-key rate limit, and no backend chosen by a request."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import LOCAL, make_app

KEY = {"Authorization": "Bearer key-one"}
CHAT = {"model": LOCAL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def client(provider, local_lm):
    app = make_app(
        provider,
        local_lm,
        api_keys=["key-one", "key-two"],
        max_body_bytes=2048,
        rate_limit_per_minute=5,
    )
    with TestClient(app) as c:
        yield c


def test_health_is_open_everything_else_needs_a_key(client):
    assert client.get("/healthz").status_code == 200
    for method, path in [("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/completions")]:
        response = client.request(method, path, headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/models", headers=KEY).status_code == 200


def test_oversize_body_is_a_413_with_the_openai_body(client):
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = client.post("/v1/chat/completions", json=big, headers=KEY)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_rate_limit_is_per_key(client):
    headers = {"Authorization": "Bearer key-two"}
    statuses = [client.get("/v1/models", headers=headers).status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429] * 3
    limited = client.get("/v1/models", headers=headers)
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert int(limited.headers["retry-after"]) >= 1
    # The other key has its own bucket.
    assert client.get("/v1/models", headers=KEY).status_code in (200, 429)


@pytest.mark.parametrize("field", ["base_url", "api_base", "backend"])
def test_a_request_cannot_choose_the_backend(provider, local_lm, field):
    # A URL in the body is not a route: the request still goes to the configured backend.
    with TestClient(make_app(provider, local_lm)) as c:
        response = c.post(
            "/v1/chat/completions", json={**CHAT, field: "http://169.254.169.254/latest"}
        )
        assert response.status_code in (200, 422), response.text
        if response.status_code == 200:
            assert response.json()["model"] == LOCAL


def test_chunked_oversize_body_is_a_413_too(client):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    response = client.post(
        "/v1/chat/completions",
        content=chunks(),
        headers={**KEY, "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
