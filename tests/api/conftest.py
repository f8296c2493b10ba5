"""API fixtures: the app on session-loaded models, in-process and under uvicorn on loopback."""

from __future__ import annotations

import json
import os

import pytest

from tests.api.servers import serve_app, verbose_backend
from thresher.api.app import create_app
from thresher.api.settings import ServiceSettings
from thresher.api.state import AppState
from thresher.core.backends import LocalBackend

LOCAL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="session", autouse=True)
def _service_data_dir(tmp_path_factory):
    """Job databases and job folders of every test app go to a temporary folder."""
    old = os.environ.get("THRESHER_DATA_DIR")
    os.environ["THRESHER_DATA_DIR"] = str(tmp_path_factory.mktemp("service"))
    yield
    if old is None:
        os.environ.pop("THRESHER_DATA_DIR")
    else:
        os.environ["THRESHER_DATA_DIR"] = old


def local_state(provider, local_lm, settings: ServiceSettings) -> AppState:
    backend = LocalBackend(local_lm, max_new_tokens=8)
    return AppState(settings=settings, provider=provider, backend=backend)


def make_app(provider, local_lm, **overrides):
    """An app on the local backend (session models), with settings overrides."""
    settings = ServiceSettings(preload_models=False, **overrides)
    return create_app(settings, state=local_state(provider, local_lm, settings))


@pytest.fixture(scope="session")
def live_local(provider, local_lm):
    """The app on the local backend, under uvicorn on a free loopback port."""
    with serve_app(make_app(provider, local_lm)) as url:
        yield url


@pytest.fixture(scope="module")
def chunks(data_dir):
    """Long-context stories cut into 360-character pieces (short distinct chat messages)."""
    out = []
    for line in (data_dir / "api" / "longqa_small.jsonl").open():
        text = json.loads(line)["context"]
        out += [text[i : i + 360] for i in range(0, len(text) - 360, 360)]
    return out


@pytest.fixture(scope="module")
def passages(data_dir):
    """The stories' first two 2,400-character passages each (prompts worth compressing)."""
    rows = [json.loads(line) for line in (data_dir / "api" / "longqa_small.jsonl").open()]
    return [row["context"][i : i + 2400] for row in rows for i in (0, 2400)]


@pytest.fixture(scope="module")
def verbose_url():
    """A loopback backend that answers at length when its prompt was cut hard."""
    with verbose_backend() as url:
        yield url
