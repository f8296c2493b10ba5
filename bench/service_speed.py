"""``bench/compression.py --speed``: llmlingua2 through the service against its floor.

Per item (the same rows as the other tasks), in one process per CPU configuration:

- ``service llmlingua2``: ``POST /v1/compress`` (the default method, rate as asked) to the app
  under uvicorn on loopback, started with its lifespan preload, wall time of the request;
- ``forward fp32``: one float32 forward pass of the classifier over the same tokens (the same
  windows and batches ``keep_probs`` runs), the model call alone;
- ``service llmlingua``: the project's own LLMLingua through the same route (on the first
  ``--llmlingua-items`` items: it is about ten times slower);
- ``in-process llmlingua2``: the compressor called directly, with the time inside the models'
  forward passes (classifier and embedder) summed, so that the rest (tokenisation, sentence
  splitting, ranking, the budget) is reported as a share of the whole.

Configurations: ``native`` (the CPU as it is), ``avx2`` (torch held to AVX2 kernels with
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, as on a CPU without native bf16) and
``avx2-bf16`` (the same with ``THRESHER_DTYPE=bfloat16``: bf16 forced where it is emulated, as
every CPU got before the choice was measured). Each runs in a child process, so the probe that
chooses the dtype sees that configuration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from thresher.core.files import atomic_write_text

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
CONFIGS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": AVX2,
    # The old default for comparison: bf16 on every CPU, here where it is emulated.
    "avx2-bf16": {**AVX2, "THRESHER_DTYPE": "bfloat16"},
}
# The targets of issue #25, checked on every configuration.
MAX_FORWARD_RATIO = 2.0
MIN_LLMLINGUA_SPEEDUP = 10.0
MAX_MS_PER_1K = 300.0


def run_configs(argv: list[str], configs: list[str], out_path: Path) -> dict[str, Any]:
    """Run this task once per configuration, each in a child process with its environment."""
    results: dict[str, Any] = {}
    for name in configs:
        env = {**os.environ, **CONFIGS[name]}
        child = [sys.executable, sys.argv[0], *argv, "--speed-child", name]
        done = subprocess.run(child, env=env, stdout=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the {name} configuration failed (exit {done.returncode})")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    table = speed_table(results)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out_path, json.dumps({"command": argv, "table": table, "configs": results}, indent=1)
    )
    print(table)
    return results


def measure(rows: list[dict], rate: float, llmlingua_items: int) -> dict[str, Any]:
    """This process's configuration: per-item times and the summary (see the module doc)."""
    import torch
    from conversation import Proxy

    from thresher.compression import load_compressor
    from thresher.core.models import ModelProvider
    from thresher.core.settings import load_settings

    proxy = Proxy({}, preload=True)
    # The bench's own copies, for the in-process runs, under the same settings as the service.
    provider = ModelProvider.from_settings(load_settings(device="cpu"))
    counter = provider.token_counter("cl100k_base")
    fp32 = provider.token_classifier(dtype="float32")
    inproc = load_compressor("llmlingua2", provider, counter=counter)
    model_seconds = _time_models(inproc)
    client = httpx.Client(base_url=proxy.url, timeout=600)

    def service(method: str, row: dict) -> tuple[float, int]:
        body = {"context": row["context"], "question": row["question"], "rate": rate}
        start = time.perf_counter()
        answer = client.post("/v1/compress", json={**body, "method": method})
        seconds = time.perf_counter() - start
        answer.raise_for_status()
        return seconds, int(answer.json()["origin_tokens"])

    service("llmlingua2", rows[0])  # the first request of any service pays no model loading,
    service("llmlingua", rows[0])  # but kernels are chosen on first use: warm both up
    items = []
    for n, row in enumerate(rows):
        l2, tokens = service("llmlingua2", row)
        batches = fp32.batches([row["context"]])
        with torch.inference_mode():
            start = time.perf_counter()
            for ids, mask in batches:
                fp32.model(input_ids=ids, attention_mask=mask)
            forward = time.perf_counter() - start
        model_seconds.clear()
        start = time.perf_counter()
        inproc.compress(row["context"], question=row["question"], rate=rate)
        whole = time.perf_counter() - start
        item = {
            "id": row["id"], "tokens": tokens, "service_llmlingua2": l2, "forward_fp32": forward,
            "inprocess_llmlingua2": whole, "inprocess_models": sum(model_seconds),
        }  # fmt: skip
        if n < llmlingua_items:
            item["service_llmlingua"] = service("llmlingua", row)[0]
        items.append(item)
    proxy.close()
    state_provider = proxy.state.provider
    return {
        "cpu": _cpu_name(),
        "capability": str(torch.backends.cpu.get_cpu_capability()),
        "threads": torch.get_num_threads(),
        "compression_dtype": state_provider.compression_precision().as_dict(),
        "load": Path("/proc/loadavg").read_text().split()[:3],
        "items": items,
        "summary": summarise(items),
    }


def _time_models(compressor: Any) -> list[float]:
    """Seconds inside the classifier's and the embedder's forward passes, appended per call."""
    seconds: list[float] = []
    for module in (compressor.scorer.model, compressor.embedder.model):
        inner = module.forward

        def timed(*args: Any, _inner: Any = inner, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _inner(*args, **kwargs)
            finally:
                seconds.append(time.perf_counter() - start)

        module.forward = timed
    return seconds


def summarise(items: list[dict]) -> dict[str, float]:
    tokens = sum(i["tokens"] for i in items)

    def ms_per_1k(key: str, subset: list[dict] | None = None) -> float:
        rows = items if subset is None else subset
        return 1e6 * sum(i[key] for i in rows) / max(sum(i["tokens"] for i in rows), 1)

    with_ll = [i for i in items if "service_llmlingua" in i]
    out = {
        "items": len(items),
        "tokens": tokens,
        "service_llmlingua2_ms_per_1k": ms_per_1k("service_llmlingua2"),
        "forward_fp32_ms_per_1k": ms_per_1k("forward_fp32"),
        "inprocess_llmlingua2_ms_per_1k": ms_per_1k("inprocess_llmlingua2"),
        "service_over_forward": float(
            np.sum([i["service_llmlingua2"] for i in items])
            / np.sum([i["forward_fp32"] for i in items])
        ),
        "non_model_share": 1
        - sum(i["inprocess_models"] for i in items) / sum(i["inprocess_llmlingua2"] for i in items),
    }
    if with_ll:
        out["service_llmlingua_ms_per_1k"] = ms_per_1k("service_llmlingua", with_ll)
        out["llmlingua_over_llmlingua2"] = ms_per_1k("service_llmlingua", with_ll) / ms_per_1k(
            "service_llmlingua2", with_ll
        )
    return out


def targets(summary: dict[str, float]) -> dict[str, bool]:
    """Which of the issue's targets a configuration meets."""
    met = {
        f"service <= {MAX_FORWARD_RATIO}x fp32 forward": summary["service_over_forward"]
        <= MAX_FORWARD_RATIO,
        f"< {MAX_MS_PER_1K:.0f} ms/1k": summary["service_llmlingua2_ms_per_1k"] < MAX_MS_PER_1K,
        "non-model work < 1/3": summary["non_model_share"] < 1 / 3,
    }
    if "llmlingua_over_llmlingua2" in summary:
        met[f">= {MIN_LLMLINGUA_SPEEDUP:.0f}x llmlingua"] = (
            summary["llmlingua_over_llmlingua2"] >= MIN_LLMLINGUA_SPEEDUP
        )
    return met


def speed_table(results: dict[str, Any]) -> str:
    lines = [
        "| config | dtype chosen | threads | service llmlingua2 ms/1k | fp32 forward ms/1k | "
        "service / forward | service llmlingua ms/1k | llmlingua / llmlingua2 | "
        "non-model share | targets |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in results.items():
        s = r["summary"]
        ll = s.get("service_llmlingua_ms_per_1k")
        met = targets(s)
        verdict = "all met" if all(met.values()) else "MISSED: " + ", ".join(
            k for k, ok in met.items() if not ok
        )
        lines.append(
            f"| {name} ({r['capability']}) | {r['compression_dtype']['value']} | {r['threads']} "
            f"| {s['service_llmlingua2_ms_per_1k']:.0f} | {s['forward_fp32_ms_per_1k']:.0f} "
            f"| {s['service_over_forward']:.2f}x | {'-' if ll is None else f'{ll:.0f}'} "
            f"| {s.get('llmlingua_over_llmlingua2', float('nan')):.1f}x "
            f"| {s['non_model_share']:.2f} | {verdict} |"
        )
    reasons = [f"- {n}: {r['compression_dtype']['reason']}" for n, r in results.items()]
    return "\n".join([*lines, "", "Why each dtype:", *reasons])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
