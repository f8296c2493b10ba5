"""Fixtures of the host-framework tests: a loopback backend that records what it receives,
Thresher's own proxy in front of it (the parity reference), and retrieved documents cut from a
story of tests/data with the question asked about it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import local_state
from tests.api.integrations.recording_backend import recording_app
from tests.api.servers import serve_app
from thresher.api.app import create_app
from thresher.api.settings import ServiceSettings

DATA = Path(__file__).parents[2] / "data"
# A 939-word mystery story from ../shared/data/longqa.jsonl and its question.
STORY = next(
    row
    for line in (DATA / "api" / "longqa_small.jsonl").read_text().splitlines()
    if "turkey" in (row := json.loads(line))["id"]
)
WORDS_PER_CHUNK = 50


def chunks(text: str, size: int = WORDS_PER_CHUNK) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]


@pytest.fixture(scope="session")
def story() -> dict:
    """One story: ``chunks`` (50-word passages, about 70 tokens each) and its ``question``."""
    return {"chunks": chunks(STORY["context"]), "question": STORY["question"], "id": STORY["id"]}


@pytest.fixture(scope="session")
def recording():
    """The recording backend under uvicorn on loopback: (base URL, list of received bodies)."""
    app = recording_app()
    with serve_app(app) as base:
        yield base, app.state.received


@pytest.fixture(scope="session")
def service_settings(recording) -> ServiceSettings:
    """One set of settings for Thresher's proxy and the adapters (the parity tests' premise).
    The deadline is far: parity is about what is forwarded, and a busy machine must not turn a
    compression into a partial one on one side only."""
    base, _ = recording
    return ServiceSettings(
        preload_models=False, routes={"recorded": f"{base}/v1"}, compress_deadline_ms=300_000
    )


@pytest.fixture(scope="session")
def thresher_proxy(provider, local_lm, service_settings, recording):
    """Thresher's own proxy on the session models, in front of the recording backend. Calling
    it with messages and ``thresher`` options returns the messages the backend received."""
    _, received = recording
    app = create_app(service_settings, state=local_state(provider, local_lm, service_settings))
    with serve_app(app) as base:

        def forward(messages: list[dict], thresher: dict) -> list[dict]:
            body = {"model": "recorded", "messages": messages, "thresher": thresher}
            answer = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300)
            answer.raise_for_status()
            return received[-1]["messages"]

        yield forward
