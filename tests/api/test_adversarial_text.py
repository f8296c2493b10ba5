"""Text shaped to make pattern matching quadratic does not freeze the server (issue #26,
finding 1): the proxy answers such a request near its deadline, and a /healthz sent meanwhile
answers at once."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.api.conftest import make_app
from tests.api.servers import fault_backend, serve_app

ADVERSARIAL = [
    "ab." * 29_000 + "\nWhat is this?",  # the email pattern's worst case, over the size cap
    "```x\n" * 12_000 + "What is this?",  # fence openers without a closer
    "ab." * 6_000 + "\nWhat is this?",  # under the size cap: planned and compressed
    "[1, " * 8_000 + "\nWhat is this?",  # brackets that never close
]


@pytest.fixture(scope="module")
def server(provider, local_lm):
    with fault_backend() as (url, _):
        app = make_app(provider, local_lm, routes={"ok": url}, compress_min_tokens=50)
        with serve_app(app) as base:
            # Load the classifier before timing anything (the first request would).
            httpx.post(
                f"{base}/v1/chat/completions",
                json={
                    "model": "ok",
                    "messages": [{"role": "user", "content": "The tide rose. " * 60 + "\nWhy?"}],
                    "thresher": {"compression": {"rate": 0.5, "when": "always"}},
                },
                timeout=300,
            )
            yield base


@pytest.mark.parametrize("text", ADVERSARIAL, ids=["email", "fence", "email-small", "brackets"])
def test_healthz_answers_while_adversarial_text_is_compressed(server, text):
    answered: dict = {}

    def send() -> None:
        start = time.monotonic()
        answered["response"] = httpx.post(
            f"{server}/v1/chat/completions",
            json={
                "model": "ok",
                "messages": [{"role": "user", "content": text}],
                "thresher": {"compression": {"rate": 0.33, "when": "always", "deadline_ms": 3000}},
            },
            timeout=120,
        )
        answered["seconds"] = time.monotonic() - start

    worker = threading.Thread(target=send)
    worker.start()
    waits = []
    time.sleep(0.05)
    while worker.is_alive() and len(waits) < 200:
        start = time.monotonic()
        assert httpx.get(f"{server}/healthz", timeout=30).status_code == 200
        waits.append(time.monotonic() - start)
        time.sleep(0.05)
    worker.join()
    assert answered["response"].status_code == 200
    # Before the linear scanners: 17.3 s to answer and 16.2 s for /healthz. Bounds are loose
    # for a shared machine; the deadline (3 s) plus the backend and transfer is the target.
    assert answered["seconds"] < 8, answered["seconds"]
    assert max(waits, default=0) < 1.0, max(waits)
