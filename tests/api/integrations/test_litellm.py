"""LiteLLM's proxy (1.110.2, its own venv: ``make litellm``) started as a process on loopback
with Thresher's guardrail enabled, in front of the recording backend; checked by what the backend
received, against Thresher's own proxy (``thresher serve``, a process too) on the same request,
and by what LiteLLM's logger recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.api.servers import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[3]
LITELLM_PYTHON = Path(
    os.environ.get(
        "THRESHER_LITELLM_PYTHON", Path.home() / ".cache/thresher/litellm-venv/bin/python"
    )
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LITELLM_PYTHON.exists(), reason="needs LiteLLM's venv: make litellm"),
]
# The deployment defaults, the same for both proxies: compress with LLMLingua when asked.
DEFAULTS = {"compression": {"method": "llmlingua"}}
CONFIG = """
model_list:
  - model_name: recorded
    litellm_params: {{model: openai/recorded, api_base: "{backend}/v1", api_key: none}}
guardrails:
  - guardrail_name: thresher
    litellm_params:
      guardrail: thresher.api.integrations.litellm.ThresherGuardrail
      mode: pre_call
      default_on: true
      thresher: {defaults}
litellm_settings:
  callbacks: ["tests.api.integrations.litellm_sink.sink"]
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = tmp_path_factory.mktemp("litellm-data")
    # A pool whose files are broken: asking for it fails inside the stage (the fail-open path).
    (data / "pools" / "broken").mkdir(parents=True)
    (data / "pools" / "broken" / "config.json").write_text("{}")
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "THRESHER_DATA_DIR": str(data),
        "THRESHER_PRELOAD_MODELS": "false",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "THRESHER_LITELLM_SINK": str(data / "sink.jsonl"),
    }


def start(cmd: list[str], health: str, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(health, timeout=300, process=proc)
    except Exception:
        proc.kill()
        raise RuntimeError(f"{cmd[0]} did not start:\n{log.read_text()[-3000:]}") from None
    return proc


@pytest.fixture(scope="module")
def proxies(recording, env, tmp_path_factory):
    """(LiteLLM's URL, Thresher's URL), both in front of the recording backend."""
    backend, _ = recording
    tmp = tmp_path_factory.mktemp("litellm")
    config = tmp / "config.yaml"
    config.write_text(CONFIG.format(backend=backend, defaults=json.dumps(DEFAULTS)))
    lport, tport = free_port(), free_port()
    litellm = start(
        [str(LITELLM_PYTHON.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1",
         "--port", str(lport), "--num_workers", "1"],
        f"http://127.0.0.1:{lport}/health/liveliness", env, tmp / "litellm.log",
    )  # fmt: skip
    thresher = start(
        [sys.executable, "-m", "thresher", "serve", "--port", str(tport), "--backend",
         f"{backend}/v1", "--model", "recorded"],
        f"http://127.0.0.1:{tport}/healthz",
        {**env, "THRESHER_PIPELINE": json.dumps(DEFAULTS)}, tmp / "thresher.log",
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{lport}/v1", f"http://127.0.0.1:{tport}/v1"
    finally:
        for proc in (litellm, thresher):
            proc.terminate()
            proc.wait(30)


def messages(story: dict) -> list[dict]:
    return [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": " ".join(story["chunks"][:4])},  # about 280 tokens
        {"role": "user", "content": story["question"]},
    ]


def post(url: str, body: dict, received: list) -> tuple[httpx.Response, list[dict] | None]:
    seen = len(received)
    answer = httpx.post(f"{url}/chat/completions", json={"model": "recorded", **body}, timeout=300)
    return answer, received[-1]["messages"] if len(received) > seen else None


def logged(env: dict, n: int) -> list[dict]:
    """The last ``n`` rows LiteLLM's logger wrote (it logs after answering: wait for them)."""
    sink = Path(env["THRESHER_LITELLM_SINK"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = sink.read_text().splitlines() if sink.exists() else []
        if len(rows) >= n:
            return [json.loads(r) for r in rows[-n:]]
        time.sleep(0.2)
    raise TimeoutError(f"LiteLLM logged {len(rows)} calls, not {n}")


def thresher_report(row: dict) -> dict:
    info = [g for g in row["guardrail_information"] or [] if g["guardrail_provider"] == "thresher"]
    assert len(info) == 1, row
    return info[0]


def test_the_guardrail_forwards_what_thresher_s_proxy_forwards(proxies, recording, story, env):
    litellm, thresher = proxies
    _, received = recording
    body = {"messages": messages(story), "thresher": {"compression": {"rate": 0.4}}}
    answer, via_litellm = post(litellm, body, received)
    assert answer.status_code == 200, answer.text
    reference, via_thresher = post(thresher, body, received)
    assert reference.status_code == 200, reference.text
    assert via_litellm == via_thresher
    assert via_litellm[0] == body["messages"][0] and via_litellm[-1] == body["messages"][-1]
    assert len(via_litellm[1]["content"]) < len(body["messages"][1]["content"])

    info = thresher_report(logged(env, 1)[0])
    assert info["guardrail_status"] == "success"
    report = info["guardrail_response"]
    assert report["saved_tokens"] == reference.json()["thresher"]["saved_tokens"] > 0
    assert report["stages"][0]["name"] == "compression"


def test_options_come_from_metadata_and_a_null_switches_a_stage_off(proxies, recording, story):
    litellm, _ = proxies
    _, received = recording
    original = messages(story)
    # The deployment default compresses (at the default rate); the request's metadata says no.
    answer, forwarded = post(
        litellm, {"messages": original, "metadata": {"thresher": {"compression": None}}}, received
    )
    assert answer.status_code == 200 and forwarded == original
    answer, forwarded = post(
        litellm, {"messages": original, "metadata": {"thresher": {"budget_tokens": 150}}},
        received,
    )  # fmt: skip
    assert answer.status_code == 200
    assert (
        sum(len(m["content"].split()) for m in forwarded)
        < 150
        < sum(len(m["content"].split()) for m in original)
    )


def test_a_caller_s_mistake_is_a_400_naming_the_field(proxies, recording, story):
    litellm, _ = proxies
    _, received = recording
    body = {"messages": messages(story), "thresher": {"compression": {"method": "zip"}}}
    answer, forwarded = post(litellm, body, received)
    assert answer.status_code == 400 and forwarded is None
    assert "thresher.compression.method 'zip' is unknown" in answer.json()["error"]["message"]
    answer, forwarded = post(litellm, {**body, "thresher": {"demonstrations": {"pool": "x"}}},
                             received)  # fmt: skip
    assert answer.status_code == 404 and "No pool named 'x'" in answer.text


def test_a_failing_stage_forwards_the_request_unchanged(proxies, recording, story, env):
    litellm, thresher = proxies
    _, received = recording
    body = {"messages": messages(story), "thresher": {"demonstrations": {"pool": "broken"}}}
    answer, via_litellm = post(litellm, body, received)
    assert answer.status_code == 200 and via_litellm == body["messages"]
    reference, via_thresher = post(thresher, body, received)
    assert reference.headers["x-thresher-failed-stage"] == "demonstrations"
    assert via_thresher == via_litellm
    info = thresher_report(logged(env, 1)[0])
    assert info["guardrail_status"] == "guardrail_failed_to_respond"
    assert info["guardrail_response"]["failed_stage"] == "demonstrations"


HOOK_SCRIPT = """
import asyncio, json, sys
from litellm.proxy._types import UserAPIKeyAuth
from thresher.api.integrations.litellm import ThresherGuardrail

guard = ThresherGuardrail(thresher={"compression": {"method": "llmlingua"}})
messages = json.loads(sys.argv[1])


async def call(key, body, call_type="acompletion"):
    data = {"model": "recorded", **body}
    return await guard.async_pre_call_hook(key, None, data, call_type)


async def main():
    team = UserAPIKeyAuth(team_metadata={"thresher": {"budget_tokens": 120}})
    both = UserAPIKeyAuth(
        team_metadata={"thresher": {"budget_tokens": 120}},
        metadata={"thresher": {"budget_tokens": None, "compression": None}},
    )
    out = {
        "team": await call(team, {"messages": messages}),
        "key_over_team": await call(both, {"messages": messages}),
        "text": await call(None, {"prompt": messages[1]["content"],
                                  "thresher": {"budget_tokens": 60}}, "atext_completion"),
        "embedding": await call(team, {"input": ["x"]}, "aembedding"),
    }
    print(json.dumps(out, default=str))


asyncio.run(main())
"""


def test_team_and_key_metadata_set_the_options(env, story):
    # LiteLLM keeps keys and teams in a database; the hook gets them as UserAPIKeyAuth objects,
    # built here as LiteLLM builds them, in LiteLLM's venv.
    original = messages(story)
    done = subprocess.run(
        [str(LITELLM_PYTHON), "-c", HOOK_SCRIPT, json.dumps(original)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    team = out["team"]
    assert sum(len(m["content"].split()) for m in team["messages"]) < 120
    assert team["metadata"]["thresher_report"]["saved_tokens"] > 0
    assert out["key_over_team"]["messages"] == original  # the key's nulls switch both off
    assert "thresher_report" not in out["key_over_team"].get("metadata", {})
    text = out["text"]
    assert len(text["prompt"].split()) < 60 and "thresher" not in text
    assert out["embedding"] == {"model": "recorded", "input": ["x"]}


FIRST_CALL_SCRIPT = """
import asyncio, json, sys, time
from thresher.api.integrations.litellm import ThresherGuardrail

guard = ThresherGuardrail()  # no arguments: the models load here, as LiteLLM starts
data = {"model": "recorded", "messages": json.loads(sys.argv[1]), "thresher": {"compression": {}}}
start = time.perf_counter()
asyncio.run(guard.async_pre_call_hook(None, None, data, "acompletion"))
print(json.dumps({"report": data["metadata"]["thresher_report"],
                  "seconds": time.perf_counter() - start}))
"""


def test_built_with_no_arguments_it_compresses_on_its_first_call(env, story):
    # The whole 939-word story in one message; the default method (llmlingua2) and deadline.
    story_messages = [
        {"role": "user", "content": " ".join(story["chunks"])},
        {"role": "user", "content": story["question"]},
    ]
    preloading = {k: v for k, v in env.items() if k != "THRESHER_PRELOAD_MODELS"}
    done = subprocess.run(
        [str(LITELLM_PYTHON), "-c", FIRST_CALL_SCRIPT, json.dumps(story_messages)],
        cwd=ROOT, env=preloading, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    stage = out["report"]["stages"][0]
    assert stage["status"] == "ran" and stage["detail"].startswith("compress;"), stage
    assert out["report"]["tokens_after"] < 0.7 * out["report"]["tokens_before"]
