"""Replicas that agree: ``thresher serve`` processes sharing a real redis-server
(THRESHER_REDIS_URL) behind a round-robin client forward the same bytes for a conversation, a
cold replica reuses the others' forms, and Redis going away mid-conversation costs no request.
The fault backend's ``mirror`` model answers with the messages it was sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from tests.api.servers import (
    fault_backend,
    free_port,
    needs_redis,
    redis_server,
    wait_until_up,
)

pytestmark = needs_redis
ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def replica(backend: str, redis_url: str, data_dir: Path, log: Path):
    """One ``thresher serve`` process on a free port; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "THRESHER_REDIS_URL": redis_url,
        "THRESHER_REDIS_TIMEOUT_MS": "2000",  # a busy CI machine may not schedule it sooner
        "THRESHER_COMPRESS_MIN_TOKENS": "50",
        "THRESHER_COMPRESS_DEADLINE_MS": "300000",  # loading models on a busy machine
        "THRESHER_PRELOAD_MODELS": "false",
        "THRESHER_DATA_DIR": str(data_dir),
    }
    cmd = [sys.executable, "-m", "thresher", "serve", "--port", str(port), "--backend", backend,
           "--model", "mirror", "--no-access-log"]  # fmt: skip
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", timeout=120, process=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def turn(base: str, messages: list[dict]) -> tuple[int, list[dict] | None, httpx.Headers]:
    body = {"model": "mirror", "messages": messages,
            "thresher": {"compression": {"rate": 0.5, "when": "always"}}}  # fmt: skip
    answer = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
    if answer.status_code != 200:
        return answer.status_code, None, answer.headers
    sent = json.loads(answer.json()["choices"][0]["message"]["content"])
    return 200, sent, answer.headers


def counts(headers: httpx.Headers) -> dict[str, str]:
    return dict(kv.split("=") for kv in headers["x-thresher-compression"].split("; "))


def test_two_replicas_forward_the_same_bytes_and_survive_redis_going_away(tmp_path, chunks):
    with ExitStack() as stack:
        redis_url, redis_proc = stack.enter_context(redis_server())
        backend, _ = stack.enter_context(fault_backend())
        replicas = [
            stack.enter_context(replica(backend, redis_url, tmp_path, tmp_path / f"r{i}.log"))
            for i in range(2)
        ]
        for base in replicas:  # each loads its models before the conversation starts
            assert turn(base, [{"role": "user", "content": chunks[-1]}])[0] == 200

        def logs() -> str:
            return "".join(f.read_text() for f in sorted(tmp_path.glob("r*.log")))

        messages = [{"role": "system", "content": "Answer briefly. " * 10}]
        previous: list[dict] = []
        earlier, identical = 0, 0
        for t in range(10):  # round robin: turn t goes to replica t % 2
            messages.append({"role": "user", "content": f"{chunks[2 * t]}\nWhat happens {t}?"})
            status, sent, headers = turn(replicas[t % 2], messages)
            assert status == 200, logs()
            earlier += len(previous)
            identical += sum(a == b for a, b in zip(sent, previous, strict=False))
            previous = sent
            messages.append({"role": "assistant", "content": chunks[2 * t + 1]})
            if t:
                # The other replica's forms are reused.
                assert int(counts(headers)["cached"]) >= 2 * t - 1, (headers, logs())
        assert identical == earlier  # 100% of earlier messages byte-identical across turns
        assert len(json.dumps(sent)) < 0.8 * len(json.dumps(messages[:-1]))

        # A replica that starts cold forwards the conversation as the others did.
        cold = stack.enter_context(replica(backend, redis_url, tmp_path, tmp_path / "r2.log"))
        status, again, headers = turn(cold, messages[:-1])
        assert status == 200 and again == previous
        assert counts(headers)["compressed"] == "0"

        # Redis goes away mid-conversation: every request is still answered, none with a 5xx.
        redis_proc.kill()
        redis_proc.wait()
        statuses = []
        for t in range(10, 14):
            messages.append({"role": "user", "content": f"{chunks[2 * t]}\nAnd then {t}?"})
            status, sent, _ = turn(replicas[t % 2], messages)
            statuses.append(status)
            messages.append({"role": "assistant", "content": chunks[2 * t + 1]})
        assert statuses == [200] * 4
        assert "shared store unavailable, caching locally" in logs()
