import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import LOCAL, make_app
from thresher.core.tokens import CachedCounter


@pytest.fixture(scope="module")
def client(provider, local_lm, embedder, scorer):
    with TestClient(make_app(provider, local_lm)) as c:
        yield c


def test_healthz_names_the_loaded_models(client):
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert any("SmolLM2-135M-Instruct" in m for m in body["models"])
    assert any("all-MiniLM-L6-v2" in m for m in body["models"])


def test_chat_pass_through_reports_tokens(client):
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": LOCAL,
            "temperature": 0,
            "max_tokens": 6,
            "messages": [{"role": "user", "content": "Say hello."}],
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"]
    # No stage configured: nothing saved, and the usage block is the backend's own.
    assert body["thresher"]["tokens_before"] == body["thresher"]["tokens_after"] > 0
    assert response.headers["x-thresher-saved-tokens"] == "0"
    assert body["usage"]["prompt_tokens"] >= body["thresher"]["tokens_before"]
    # Counted by the route's counter, which remembers the text for the next turn.
    counters = client.app.state.thresher.counters.values()
    assert any("Say hello." in c._memo for c in counters if isinstance(c, CachedCounter))


def test_completion_pass_through(client):
    response = client.post(
        "/v1/completions",
        json={"model": LOCAL, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0},
    )
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "text_completion"
    assert response.json()["choices"][0]["text"]


def test_chat_stream_is_server_sent_events(client):
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": LOCAL,
            "stream": True,
            "temperature": 0,
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-thresher-tokens-before"].isdigit()
    assert lines[0].startswith("data: {") and lines[-1] == "data: [DONE]"
    assert '"thresher"' in lines[0]


def test_models_lists_what_is_routable(client):
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert LOCAL in ids


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"model": LOCAL}, 422, "messages"),
        (
            {"model": LOCAL, "messages": [{"role": "wizard", "content": "x"}]},
            422,
            "messages[0].role",
        ),
        ({"model": LOCAL, "messages": "hi"}, 422, "messages"),
        ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, 422, "model"),
        (
            {"model": LOCAL, "max_tokens": "many", "messages": [{"role": "user", "content": "x"}]},
            422,
            "max_tokens",
        ),
        ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
        (
            {
                "model": LOCAL,
                "messages": [{"role": "user", "content": "x"}],
                "thresher": {"compression": {"rate": 3}},
            },
            422,
            "thresher.compression.rate",
        ),
        (
            {
                "model": LOCAL,
                "messages": [{"role": "user", "content": "x"}],
                "thresher": {"surprise": 1},
            },
            422,
            "thresher.surprise",
        ),
    ],
)
def test_bad_chat_requests_get_openai_error_bodies(client, body, status, param):
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert "Traceback" not in response.text


def test_malformed_json_is_a_400(client):
    response = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_metrics_count_requests_and_tokens(client):
    client.post(
        "/v1/chat/completions",
        json={"model": LOCAL, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]},
    )
    text = client.get("/metrics").text
    assert 'thresher_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert "thresher_prompt_tokens_total" in text and "thresher_request_seconds_bucket" in text


def test_the_lane_serves_valid_proxy_requests_and_hands_the_rest_to_the_routes(client):
    lane = client.app.front.app
    routes, reached = lane.app, []

    async def spy(scope, receive, send):
        reached.append(scope.get("path"))
        await routes(scope, receive, send)

    lane.app = spy
    try:
        chat = {"model": LOCAL, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
        ok = client.post("/v1/chat/completions", json=chat)
        missing = client.post("/v1/chat/completions", json={"model": LOCAL})
        as_text = client.post(
            "/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"}
        )
        unknown = client.post("/v1/chat/completions", json={**chat, "model": "nope"})
        health = client.get("/healthz")
    finally:
        lane.app = routes
    assert ok.status_code == 200 and ok.json()["thresher"]["tokens_before"] > 0
    # A body that does not validate gets the routes' answer, word for word as before.
    assert missing.status_code == 422 and missing.json()["error"]["param"] == "messages"
    assert as_text.status_code == 422
    # Errors raised in the lane go through the app's own handlers.
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert health.status_code == 200
    assert reached == ["/v1/chat/completions", "/v1/chat/completions", "/healthz"]


def test_serve_freezes_the_heap_and_spaces_out_young_collections(provider, local_lm):
    import gc

    from tests.api.conftest import local_state
    from thresher.api.app import create_app
    from thresher.api.settings import ServiceSettings

    def app(**overrides):
        settings = ServiceSettings(preload_models=False, **overrides)
        return create_app(settings, state=local_state(provider, local_lm, settings),
                          gc_tuning=True)  # fmt: skip

    before = gc.get_threshold()
    try:
        with TestClient(app(gc_young_threshold=12345)):
            assert gc.get_threshold()[0] == 12345 and gc.get_freeze_count() > 0
        gc.set_threshold(*before)
        with TestClient(app(gc_young_threshold=0)):
            assert gc.get_threshold() == before  # 0: Python's collector left as it is
    finally:
        gc.set_threshold(*before)


def test_an_embedded_app_leaves_the_collector_alone(provider, local_lm):
    import gc

    before = gc.get_threshold()
    with TestClient(make_app(provider, local_lm, gc_young_threshold=12345)):
        assert gc.get_threshold() == before  # a notebook or a test run is not a server
