"""``bench/proxy.py --peer litellm``: LiteLLM's proxy (one worker; its venv from ``make
litellm``) plain, with a guardrail that does nothing (bench/litellm_noop.py: what LiteLLM spends
on any guardrail) and with :class:`api.integrations.litellm.ThresherGuardrail`, next to
Thresher's proxy plain and with the same pipeline defaults, against one loopback backend: what
each adds over direct under load (short prompts: the stages are built, count tokens and skip),
then one long prompt at a time (the stages compress it): the guardrail's time next to Thresher's
own stage time. Each server is started, measured and stopped in turn.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from proxy import BODY, ROOT, free_port, measure, start

# The pipeline defaults both proxies get in the "with stages" runs: LLMLingua when a prompt is
# long enough (the bench prompt is not: the stage is built, counts tokens, and skips).
PEER_PIPELINE = {"compression": {"method": "llmlingua", "rate": 0.5}}
LITELLM_CONFIG = """
model_list:
  - model_name: fast
    litellm_params: {{model: openai/fast, api_base: "{backend}", api_key: none}}
{guardrails}
"""
LITELLM_GUARDRAIL = """guardrails:
  - guardrail_name: {name}
    litellm_params:
      guardrail: {path}
      mode: pre_call
      default_on: true
{params}"""
# LiteLLM alone, with a guardrail that does nothing (what LiteLLM spends on any guardrail), and
# with Thresher's.
LITELLM_TARGETS = {
    "litellm": None,
    "litellm+noop": ("noop", "bench.litellm_noop.NoopGuardrail", ""),
    "litellm+guardrail": (
        "thresher",
        "api.integrations.litellm.ThresherGuardrail",
        f"      thresher: {json.dumps(PEER_PIPELINE)}\n",
    ),
}


def long_prompt(url: str, body: dict, n: int) -> dict[str, float]:
    """Median latency of ``n`` sequential long prompts (after one untimed: it loads the scoring
    LM), and the compression stage's own time where the answer reports it (Thresher's proxy)."""
    post = lambda: httpx.post(f"{url}/chat/completions", json=body, timeout=600)  # noqa: E731
    post().raise_for_status()
    walls, stage = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        answer = post()
        walls.append((time.perf_counter() - t0) * 1000)
        answer.raise_for_status()
        report = answer.json().get("thresher") or {}
        stage += [s["ms"] for s in report.get("stages", []) if s["name"] == "compression"]
    return {"ms": float(np.median(walls)), "stage_ms": float(np.median(stage)) if stage else 0.0}


def litellm_peer(
    delay: float, clients: int, seconds: float, repeat: int, python: Path, data: Path, long: int
) -> list[dict]:
    """Direct, Thresher plain and with stages, LiteLLM plain, with a no-op guardrail and with
    Thresher's; each server started, measured and stopped in turn (they do not share the CPU)."""
    if not python.exists():
        raise SystemExit(f"no LiteLLM venv at {python}: make litellm, or pass --litellm-python")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "THRESHER_PRELOAD_MODELS": "false",
        "THRESHER_DATA_DIR": str(ROOT / ".thresher" / "bench"),
        "THRESHER_LOG_LEVEL": "WARNING",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "LITELLM_LOG": "ERROR",
    }
    tool = "wrk -t1" if shutil.which("wrk") else "asyncio+api.http1"
    print(f"load: {tool}, {seconds:g} s per run, {clients} clients, backend delay {delay:g} ms; "
          f"one worker each; stages: {json.dumps(PEER_PIPELINE)}")  # fmt: skip
    backend_port = free_port()
    backend_url = f"http://127.0.0.1:{backend_port}/v1"
    backend = start(
        [sys.executable, "bench/fast_backend.py", str(backend_port), "--delay-ms", str(delay)],
        f"{backend_url}/models",
    )
    folder = Path(tempfile.mkdtemp(prefix="litellm-peer-"))
    targets: list[tuple[str, list[str], str, dict[str, str]]] = []
    for label, pipeline in (("thresher", None), ("thresher+stages", PEER_PIPELINE)):
        port = free_port()
        cmd = [sys.executable, "-m", "api", "serve", "--port", str(port), "--backend",
               backend_url, "--model", "fast", "--no-access-log"]  # fmt: skip
        extra = {"THRESHER_PIPELINE": json.dumps(pipeline)} if pipeline else {}
        targets.append((label, cmd, f"http://127.0.0.1:{port}", {**env, **extra}))
    for label, guardrail in LITELLM_TARGETS.items():
        port = free_port()
        guard = ""
        if guardrail:
            name, path, params = guardrail
            guard = LITELLM_GUARDRAIL.format(name=name, path=path, params=params)
        config = folder / f"{label}.yaml"
        config.write_text(LITELLM_CONFIG.format(backend=backend_url, guardrails=guard))
        cmd = [str(python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1",
               "--port", str(port), "--num_workers", "1"]  # fmt: skip
        targets.append((label, cmd, f"http://127.0.0.1:{port}", env))
    story = json.loads(data.read_text().splitlines()[0])
    long_body = {**BODY, "messages": [  # about 300 tokens: the stages compress it
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": story["context"][:1400]},
        {"role": "user", "content": story["question"]}]}  # fmt: skip
    rows: list[dict] = []
    try:
        for _ in range(repeat):
            direct = measure(f"{backend_url}/chat/completions", clients, seconds, backend.pid)
            row: dict = {"delay_ms": delay, "clients": clients, "direct": direct}
            for label, cmd, base, target_env in targets:
                health = "/healthz" if label.startswith("thresher") else "/health/liveliness"
                proc = start(cmd, base + health, target_env, log=folder / f"{label}.log")
                try:
                    row[label] = measure(f"{base}/v1/chat/completions", clients, seconds, proc.pid)
                    if long:
                        row[label]["long"] = long_prompt(f"{base}/v1", long_body, long)
                finally:
                    proc.terminate()
                    proc.wait(30)
            rows.append(row)
            print_peer(row)
    finally:
        backend.terminate()
        backend.wait(20)
    shutil.rmtree(folder, ignore_errors=True)  # kept when a server failed: its log is there
    return rows


def print_peer(row: dict) -> None:
    direct = row["direct"]
    print(f"direct             p50 {direct['p50_ms']:8.2f} p99 {direct['p99_ms']:8.2f} ms "
          f"{direct['rps']:7.0f} req/s")  # fmt: skip
    for label in ("thresher", "thresher+stages", *LITELLM_TARGETS):
        r = row[label]
        print(f"{label:<18} p50 {r['p50_ms']:8.2f} p99 {r['p99_ms']:8.2f} ms {r['rps']:7.0f} "
              f"req/s | added p50 {r['p50_ms'] - direct['p50_ms']:+8.2f} ms | "
              f"CPU {r['cpu_ms_per_request']:.2f} ms/req")  # fmt: skip
    for what, base, with_ in (
        ("the stages to Thresher", "thresher", "thresher+stages"),
        ("a no-op guardrail to LiteLLM", "litellm", "litellm+noop"),
        ("Thresher's guardrail to LiteLLM", "litellm", "litellm+guardrail"),
        ("Thresher's guardrail over the no-op", "litellm+noop", "litellm+guardrail"),
    ):
        p50 = row[with_]["p50_ms"] - row[base]["p50_ms"]
        cpu = row[with_]["cpu_ms_per_request"] - row[base]["cpu_ms_per_request"]
        print(f"  added by {what:<36} p50 {p50:+8.2f} ms, CPU {cpu:+.2f} ms/req")
    if "long" in row["thresher"]:
        long = {k: row[k]["long"]["ms"] for k in ("thresher", "thresher+stages", *LITELLM_TARGETS)}
        print("  one ~300-token prompt at a time (median ms): " +
              ", ".join(f"{k} {v:.0f}" for k, v in long.items()))  # fmt: skip
        stage = row["thresher+stages"]["long"]["stage_ms"]
        to_thresher = long["thresher+stages"] - long["thresher"]
        to_litellm = long["litellm+guardrail"] - long["litellm"]
        print(f"  compression: Thresher's stage {stage:.0f} ms, adding {to_thresher:+.0f} ms to "
              f"Thresher; the guardrail adds {to_litellm:+.0f} ms to LiteLLM")  # fmt: skip
