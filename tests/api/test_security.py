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


def test_failed_keys_are_limited_per_address(provider, local_lm):
    app = make_app(provider, local_lm, api_keys=["right"], auth_failures_per_minute=3)
    with TestClient(app) as c:
        wrong = {"Authorization": "Bearer guess"}
        statuses = [c.get("/v1/models", headers=wrong).status_code for _ in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        # While blocked, the right key is refused too: a guess cannot tell a hit by its answer.
        blocked = c.get("/v1/models", headers={"Authorization": "Bearer right"})
        assert blocked.status_code == 429
        assert blocked.json()["error"]["code"] == "too_many_failed_keys"
        assert int(blocked.headers["retry-after"]) >= 1


def test_healthz_without_a_key_says_only_that_it_is_up(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/healthz", headers={"Authorization": "Bearer wrong"}).json() == {
        "status": "ok"
    }
    detailed = client.get("/healthz", headers=KEY).json()
    assert detailed["status"] == "ok" and {"models", "backend", "device"} <= set(detailed)
    # How compression's models run here, and why (the provider's own choice).
    provider = client.app.state.thresher.provider
    assert detailed["compute"]["compression_dtype"] == provider.compression_precision().as_dict()
    assert detailed["compute"]["threads"]["value"] >= 1


def test_a_job_belongs_to_the_key_that_made_it(provider, local_lm, tmp_path, data_dir):
    rows = tmp_path / "rows.jsonl"
    lines = (data_dir / "api" / "intent_pool_small.jsonl").read_text().splitlines()[:20]
    rows.write_text("\n".join(lines) + "\n")
    app = make_app(
        provider, local_lm, api_keys=["alice", "bob"], data_dir=tmp_path / "home",
        jobs_input_roots=[tmp_path],
    )  # fmt: skip
    alice, bob = ({"Authorization": f"Bearer {k}"} for k in ("alice", "bob"))
    recipe = {"steps": [{"type": "length"}, {"type": "top_k", "score": "length", "k": 3}]}
    with TestClient(app) as c:
        made = c.post("/v1/selection/jobs", json={"recipe": recipe, "input_path": str(rows)},
                      headers=alice)  # fmt: skip
        assert made.status_code == 202, made.text
        job = made.json()["id"]
        assert c.get(f"/v1/selection/jobs/{job}", headers=alice).status_code == 200
        assert [j["id"] for j in c.get("/v1/selection/jobs", headers=alice).json()["data"]] == [job]
        # To another key the job does not exist: the same 404 as an unknown id.
        assert c.get(f"/v1/selection/jobs/{job}", headers=bob).status_code == 404
        assert c.get("/v1/selection/jobs", headers=bob).json()["data"] == []
        files = c.get(f"/v1/selection/jobs/{job}/files/report.html", headers=bob)
        assert files.status_code == 404


def test_a_path_error_does_not_map_the_server_disk(provider, local_lm, tmp_path):
    home = tmp_path / "home"
    with TestClient(make_app(provider, local_lm, data_dir=home)) as c:
        recipe = {"inputs": ["../../../../etc/passwd"], "steps": [{"type": "length"}]}
        response = c.post("/v1/selection/jobs", json={"recipe": recipe})
    assert response.status_code == 422, response.text
    assert str(tmp_path) not in response.text and "/etc/passwd" not in response.text
    assert response.json()["error"]["param"] == "recipe.inputs[0].path"


@pytest.mark.parametrize("setting", ["scorer_model", "embedder_model"])
def test_startup_fails_naming_a_model_setting_that_cannot_load(setting):
    from thresher.api.app import create_app
    from thresher.api.settings import ServiceSettings
    from thresher.core.errors import ConfigError

    app = create_app(ServiceSettings(preload_models=False, **{setting: "no-such-model"}))
    with pytest.raises(ConfigError, match=f"THRESHER_{setting.upper()}"):
        with TestClient(app):
            pass


def test_serve_refuses_an_unknown_model_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "THRESHER_SCORER_MODEL": "no-such-model",
        "THRESHER_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "thresher", "serve", "--port", "1"], capture_output=True, text=True,
        env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "THRESHER_SCORER_MODEL" in result.stderr and "Traceback" not in result.stderr


def test_the_tenant_is_the_key_digest_or_anonymous():
    from thresher.api.state import ANONYMOUS_TENANT, tenant_of

    assert tenant_of({"thresher.caller": "ab12"}) == "ab12"
    assert tenant_of({"thresher.caller": None}) == ANONYMOUS_TENANT
    assert tenant_of({}) == ANONYMOUS_TENANT
