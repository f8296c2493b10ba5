"""``bench/proxy.py --peer litellm``: LiteLLM's proxy (one worker; its venv from ``make
litellm``) plain, with a guardrail that does nothing (bench/litellm_noop.py: what LiteLLM spends
on any guardrail) and with :class:`thresher.api.integrations.litellm.ThresherGuardrail`, next to
Thresher's proxy plain and with the same pipeline defaults, against one loopback backend: what
each adds over direct under load (short prompts: the stages are built, count tokens and skip),
then one long prompt at a time (the stages compress it): the guardrail's time next to Thresher's
own stage time. Each server is started, measured and stopped in turn.

With ``--rounds`` (:func:`litellm_rounds`): the same servers at low concurrency (one client,
sequential, and any other ``--low-clients``), all started at once and measured in rounds that
interleave them, so that the machine's drift falls on every configuration alike; each round
sends ``--per-round`` short requests to each and then the same ``--long`` long prompts (new
ones each round: a prompt seen before would come from the compression cache) one by one. The
figures are medians across rounds of each round's p50/p90, of what a configuration adds over
the one it is compared with in the same round, and of CPU per request. The long prompts also
go to a fourth LiteLLM, with the guardrail and bench/litellm_report.py's logger, which gives the
guardrail's own stage time and the hook's duration inside LiteLLM for the same prompts.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
        "thresher.api.integrations.litellm.ThresherGuardrail",
        f"      thresher: {json.dumps(PEER_PIPELINE)}\n",
    ),
}


def peer_env() -> dict[str, str]:
    """The servers' environment: this checkout's code, no preloaded models, quiet logs."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "THRESHER_PRELOAD_MODELS": "false",
        "THRESHER_DATA_DIR": str(ROOT / ".thresher" / "bench"),
        "THRESHER_LOG_LEVEL": "WARNING",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "LITELLM_LOG": "ERROR",
    }


def start_backend(delay: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    cmd = [sys.executable, "bench/fast_backend.py", str(port), "--delay-ms", str(delay)]
    return start(cmd, f"{url}/models"), url


Target = tuple[str, list[str], str, dict[str, str]]


# LiteLLM with Thresher's guardrail and bench/litellm_report.py's logger (--rounds, long prompts).
LOGGED = "litellm+guardrail+log"
LOGGER = """litellm_settings:
  callbacks: ["bench.litellm_report.reports"]
"""


def peer_targets(
    backend_url: str, folder: Path, python: Path, env: dict[str, str], logged: bool = False
) -> list[Target]:
    """(label, command, base URL, environment) of Thresher's proxy plain and with the stages
    and of LiteLLM plain, with the no-op guardrail and with Thresher's (and, ``logged``, with
    Thresher's and a logger of its reports into ``folder``/reports.jsonl); LiteLLM's configs
    go into ``folder``."""
    if not python.exists():
        raise SystemExit(f"no LiteLLM venv at {python}: make litellm, or pass --litellm-python")
    targets: list[Target] = []
    for label, pipeline in (("thresher", None), ("thresher+stages", PEER_PIPELINE)):
        port = free_port()
        cmd = [sys.executable, "-m", "thresher", "serve", "--port", str(port), "--backend",
               backend_url, "--model", "fast", "--no-access-log"]  # fmt: skip
        extra = {"THRESHER_PIPELINE": json.dumps(pipeline)} if pipeline else {}
        targets.append((label, cmd, f"http://127.0.0.1:{port}", {**env, **extra}))
    litellm = dict(LITELLM_TARGETS)
    if logged:
        litellm[LOGGED] = LITELLM_TARGETS["litellm+guardrail"]
    for label, guardrail in litellm.items():
        port = free_port()
        guard = ""
        if guardrail:
            name, path, params = guardrail
            guard = LITELLM_GUARDRAIL.format(name=name, path=path, params=params)
        extra = {}
        if label == LOGGED:
            guard += LOGGER
            extra = {"THRESHER_BENCH_REPORTS": str(folder / "reports.jsonl")}
        config = folder / f"{label}.yaml"
        config.write_text(LITELLM_CONFIG.format(backend=backend_url, guardrails=guard))
        cmd = [str(python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1",
               "--port", str(port), "--num_workers", "1"]  # fmt: skip
        targets.append((label, cmd, f"http://127.0.0.1:{port}", {**env, **extra}))
    return targets


def logged_reports(path: Path, seen: int, n: int) -> list[dict]:
    """The ``n`` guardrail records LiteLLM's logger wrote after the first ``seen`` (it logs
    after answering: wait for them)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = path.read_text().splitlines() if path.exists() else []
        if len(rows) >= seen + n:
            return [g for row in rows[seen : seen + n] for g in json.loads(row)]
        time.sleep(0.05)
    raise TimeoutError(f"LiteLLM logged {len(rows) - seen} calls, not {n}")


def health_url(label: str, base: str) -> str:
    return base + ("/healthz" if label.startswith("thresher") else "/health/liveliness")


def long_bodies(data: Path, n: int) -> list[dict]:
    """``n`` different chat requests of about 300 tokens (the stages compress them): windows
    of 1400 characters of the stories in ``data``, 300 characters apart, with their question."""
    stories = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    longest = max(len(story["context"]) for story in stories)
    windows = [(story, offset) for offset in range(0, longest, 300) for story in stories
               if offset + 1400 <= len(story["context"])]  # fmt: skip
    if len(windows) < n:
        raise SystemExit(f"{data} has {len(windows)} windows of 1400 characters, not {n}")
    return [
        {
            **BODY,
            "messages": [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": story["context"][offset : offset + 1400]},
                {"role": "user", "content": story["question"]},
            ],
        }
        for story, offset in windows[:n]
    ]


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
    env = peer_env()
    tool = "wrk -t1" if shutil.which("wrk") else "asyncio+api.http1"
    print(f"load: {tool}, {seconds:g} s per run, {clients} clients, backend delay {delay:g} ms; "
          f"one worker each; stages: {json.dumps(PEER_PIPELINE)}")  # fmt: skip
    backend, backend_url = start_backend(delay)
    folder = Path(tempfile.mkdtemp(prefix="litellm-peer-"))
    targets = peer_targets(backend_url, folder, python, env)
    long_body = long_bodies(data, 1)[0]
    rows: list[dict] = []
    try:
        for _ in range(repeat):
            direct = measure(f"{backend_url}/chat/completions", clients, seconds, backend.pid)
            row: dict = {"delay_ms": delay, "clients": clients, "direct": direct}
            for label, cmd, base, target_env in targets:
                proc = start(cmd, health_url(label, base), target_env, log=folder / f"{label}.log")
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


# -- low concurrency, interleaved rounds (--rounds) -------------------------------------------

COMPARED = (  # (what, configuration, compared with)
    ("the stages to Thresher", "thresher+stages", "thresher"),
    ("a no-op guardrail to LiteLLM", "litellm+noop", "litellm"),
    ("Thresher's guardrail to LiteLLM", "litellm+guardrail", "litellm"),
    ("Thresher's guardrail over the no-op", "litellm+guardrail", "litellm+noop"),
)


async def fixed_load(url: str, bodies: list[dict], clients: int) -> tuple[list[float], list[dict]]:
    """Each body sent once, by ``clients`` closed-loop workers over keep-alive connections (one
    client: one by one); the latencies in ms and the answers, in the bodies' order."""
    from thresher.core.http1 import Http1Pool

    base, _, path = url.partition("/v1")
    pool = Http1Pool(
        base + "/v1", headers={"Content-Type": "application/json"}, timeout=600, max_idle=clients
    )
    payloads = [json.dumps(b).encode() for b in bodies]
    latencies = [0.0] * len(bodies)
    answers: list[dict] = [{}] * len(bodies)
    todo = iter(range(len(bodies)))

    async def worker() -> None:
        for i in todo:
            t0 = time.perf_counter()
            status, answer = await pool.request("POST", path, payloads[i])
            latencies[i] = (time.perf_counter() - t0) * 1000
            if status != 200:
                raise RuntimeError(f"{url} answered {status}: {answer[:200]!r}")
            answers[i] = json.loads(answer)

    try:
        await asyncio.gather(*(worker() for _ in range(clients)))
    finally:
        pool.close()
    return latencies, answers


def cpu_ms(pid: int) -> float:
    """CPU time of a process's threads and its children's, in ms, from /proc/*/schedstat (in
    ns: /proc/*/stat counts 10-ms ticks, too coarse for the ~0.1 ms per request compared here;
    a thread that has ended drops out, and the servers' threads here live as long as they do)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
                todo += [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that ended meanwhile
    return total / 1e6


def timed(url: str, bodies: list[dict], clients: int, pid: int | None) -> dict[str, Any]:
    """p50/p90 latency and the server's CPU per request for ``bodies`` sent to ``url``; for
    Thresher's proxy, the compression stage's own time and status as its reports give them."""
    before = cpu_ms(pid) if pid else 0.0
    latencies, answers = asyncio.run(fixed_load(url, bodies, clients))
    cpu = (cpu_ms(pid) - before) / len(bodies) if pid else 0.0
    stages = [s for a in answers for s in (a.get("thresher") or {}).get("stages", [])
              if s["name"] == "compression"]  # fmt: skip
    row: dict[str, Any] = {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p90_ms": float(np.percentile(latencies, 90)),
        "cpu_ms_per_request": cpu,
    }
    if stages:
        row["stage_ms"] = float(np.median([s["ms"] for s in stages]))
        row["stage_ran"] = sum(s["status"] == "ran" for s in stages) / len(stages)
    return row


def litellm_rounds(
    delay: float,
    clients: list[int],
    rounds: int,
    per_round: int,
    long: int,
    python: Path,
    data: Path,
) -> dict[str, Any]:
    """Direct, Thresher's proxy plain and with the stages, LiteLLM plain, with the no-op
    guardrail and with Thresher's, all up at once, measured at low concurrency in ``rounds``
    rounds; each round visits the configurations in a rotated order (none always goes first)."""
    env = peer_env()
    print(f"low concurrency: {rounds} rounds; per round and configuration {per_round} short "
          f"requests at each of {clients} clients, then {long} long prompts one by one; backend "
          f"delay {delay:g} ms; one worker each; stages: {json.dumps(PEER_PIPELINE)}")  # fmt: skip
    backend, backend_url = start_backend(delay)
    folder = Path(tempfile.mkdtemp(prefix="litellm-rounds-"))
    procs: dict[str, subprocess.Popen] = {}
    urls = {"direct": f"{backend_url}/chat/completions"}
    pids: dict[str, int | None] = {"direct": None}  # the backend's CPU is not the question
    bodies = long_bodies(data, rounds * long + 1)
    out: dict[str, Any] = {"delay_ms": delay, "clients": clients, "rounds": []}
    try:
        targets = peer_targets(backend_url, folder, python, env, logged=bool(long))
        for label, cmd, base, target_env in targets:
            procs[label] = start(cmd, health_url(label, base), target_env, folder / f"{label}.log")
            urls[label], pids[label] = f"{base}/v1/chat/completions", procs[label].pid
        reports, seen = folder / "reports.jsonl", 0
        for label in urls:  # untimed: connections, first-request paths, the scoring LM
            timed(urls[label], [BODY] * 20 + bodies[-1:], 1, None)
            seen += 21 if label == LOGGED else 0
        labels = [k for k in urls if k != LOGGED]  # the logger's CPU is not the guardrail's
        for r in range(rounds):
            order = labels[r % len(labels) :] + labels[: r % len(labels)]
            row: dict[str, Any] = {"load": os.getloadavg()[0]}
            for n in clients:
                row[f"short@{n}"] = {
                    k: timed(urls[k], [BODY] * per_round, n, pids[k]) for k in order
                }
            if long:
                mine = bodies[r * long : (r + 1) * long]
                row["long"] = {}
                for k in [*order, LOGGED] if r % 2 else [LOGGED, *order]:
                    row["long"][k] = timed(urls[k], mine, 1, pids[k])
                    if k == LOGGED:  # the guardrail's own report and the hook's duration
                        logged = logged_reports(reports, seen, len(mine))
                        seen += len(mine)
                        row["long"][k]["stage_ms"] = float(
                            np.median([st["ms"] for g in logged for st in g["report"]["stages"]])
                        )
                        row["long"][k]["hook_ms"] = float(
                            np.median([g["duration"] * 1000 for g in logged]))  # fmt: skip
            out["rounds"].append(row)
            print(f"round {r + 1}/{rounds} done, load {row['load']:.2f}", flush=True)
    finally:
        for proc in (*procs.values(), backend):
            proc.terminate()
        for proc in (*procs.values(), backend):
            proc.wait(30)
    shutil.rmtree(folder, ignore_errors=True)
    print_rounds(out)
    return out


def print_rounds(out: dict[str, Any]) -> None:
    """Medians across rounds (min .. max in brackets for the differences)."""
    rounds = out["rounds"]
    med = lambda xs: float(np.median(xs))  # noqa: E731
    loads = [r["load"] for r in rounds]
    print(f"load average (1 min) over the rounds: median {med(loads):.2f} "
          f"({min(loads):.2f} .. {max(loads):.2f})")  # fmt: skip
    for part in [k for k in rounds[0] if k != "load"]:
        what = "one ~300-token prompt at a time (compressed)" if part == "long" else part
        print(f"{what}: medians across {len(rounds)} rounds")
        canonical = ["direct", "thresher", "thresher+stages", *LITELLM_TARGETS, LOGGED]
        labels = [k for k in canonical if k in rounds[0][part]]
        for k in labels:
            cells = [r[part][k] for r in rounds]
            p50 = med([c["p50_ms"] for c in cells])
            p90 = med([c["p90_ms"] for c in cells])
            added = med(
                [
                    c["p50_ms"] - r[part]["direct"]["p50_ms"]
                    for c, r in zip(cells, rounds, strict=True)
                ]
            )
            line = f"  {k:<18} p50 {p50:8.2f} p90 {p90:8.2f} ms | added p50 {added:+8.2f} ms"
            if k != "direct":
                line += f" | CPU {med([c['cpu_ms_per_request'] for c in cells]):6.2f} ms/req"
            if "stage_ran" in cells[0]:
                ran = med([c["stage_ran"] for c in cells])
                line += f" | Thresher's stage {med([c['stage_ms'] for c in cells]):.2f} ms"
                line += f" (ran in {ran:.0%})"
            print(line)
        for what, k, base in COMPARED:
            d50 = [r[part][k]["p50_ms"] - r[part][base]["p50_ms"] for r in rounds]
            d90 = [r[part][k]["p90_ms"] - r[part][base]["p90_ms"] for r in rounds]
            cpu = [r[part][k]["cpu_ms_per_request"] - r[part][base]["cpu_ms_per_request"]
                   for r in rounds]  # fmt: skip
            print(f"    added by {what:<36} p50 {med(d50):+8.2f} ms ({min(d50):+.1f} .. "
                  f"{max(d50):+.1f}), p90 {med(d90):+8.2f} ms, CPU {med(cpu):+6.2f} ms/req "
                  f"({min(cpu):+.2f} .. {max(cpu):+.2f})")  # fmt: skip
        cpu = [r[part]["litellm+guardrail"]["cpu_ms_per_request"]
               - r[part]["litellm+noop"]["cpu_ms_per_request"]
               - r[part]["thresher+stages"]["cpu_ms_per_request"]
               + r[part]["thresher"]["cpu_ms_per_request"] for r in rounds]  # fmt: skip
        print(
            "    the guardrail's added CPU (over the no-op) minus the stages' added CPU (to "
            f"Thresher): {med(cpu):+.2f} ms/req ({min(cpu):+.2f} .. {max(cpu):+.2f})"
        )
        if LOGGED in rounds[0][part]:
            cells = [r[part][LOGGED] for r in rounds]
            over = [c["p50_ms"] - r[part]["litellm+noop"]["p50_ms"] - c["stage_ms"]
                    for c, r in zip(cells, rounds, strict=True)]  # fmt: skip
            gap = [c["hook_ms"] - c["stage_ms"] for c in cells]
            print(f"    inside LiteLLM ({LOGGED}): the guardrail's stage "
                  f"{med([c['stage_ms'] for c in cells]):.2f} ms, its hook "
                  f"{med([c['hook_ms'] for c in cells]):.2f} ms (hook minus stage "
                  f"{med(gap):+.2f} ms, {min(gap):+.1f} .. {max(gap):+.1f}); added p50 over the "
                  f"no-op minus its own stage {med(over):+.2f} ms "
                  f"({min(over):+.1f} .. {max(over):+.1f})")  # fmt: skip
        stages = [r[part]["thresher+stages"].get("stage_ms") for r in rounds]
        if all(x is not None for x in stages):
            over = [r[part]["litellm+guardrail"]["p50_ms"] - r[part]["litellm+noop"]["p50_ms"] - st
                    for r, st in zip(rounds, stages, strict=True)]  # fmt: skip
            print(f"    the guardrail's added p50 (over the no-op) minus Thresher's stage time: "
                  f"{med(over):+.2f} ms ({min(over):+.1f} .. {max(over):+.1f})")  # fmt: skip
