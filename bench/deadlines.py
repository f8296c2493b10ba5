"""Deadlines under load, against ``thresher serve`` as a process (issue 26's targets).

Three measurements, each a user's experience rather than a proxy for it:

1. **Another tenant under a burst.** key-a sends 8 concurrent long chat compressions; key-b
   then sends requests with a 2 s deadline. Reported: b's latency and the queue time its answer
   reports. Target: under 2.5 s.
2. **Planning under the deadline.** One chat of many messages (planning alone takes seconds)
   with a 1.5 s deadline, while ``/healthz`` is polled. Reported: the request's latency and the
   slowest ``/healthz``.
3. **``/v1/compress`` deadline.** A long llmlingua compression with ``deadline_ms`` 800.
   Reported: latency and status.

With ``--baseline PYTHON`` the same runs go against another checkout's interpreter (e.g. the
main branch's venv) in the same session, so the two are compared on one machine under one load.
A baseline without ``deadline_ms`` on ``/v1/compress`` runs that request without it.

    python bench/deadlines.py                                   # this checkout, full
    python bench/deadlines.py --baseline /path/to/main/.venv/bin/python
    python bench/deadlines.py --smoke                           # smaller, under two minutes
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "api" / "longqa_small.jsonl"
A, B = ({"Authorization": f"Bearer {k}"} for k in ("key-a", "key-b"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chunks() -> list[str]:
    out = []
    for line in DATA.open():
        text = json.loads(line)["context"]
        out += [text[i : i + 360] for i in range(0, len(text) - 360, 360)]
    return out


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise TimeoutError(url)


class Served:
    """``python -m thresher serve`` of one interpreter, with two keys, in front of the
    fast backend."""

    def __init__(self, python: str, backend: str, home: Path) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "THRESHER_DATA_DIR": str(home),
            "THRESHER_API_KEYS": '["key-a", "key-b"]',
            "THRESHER_ROUTES": json.dumps({"fast": backend}),
            "THRESHER_COMPRESS_MIN_TOKENS": "50",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        self.proc = subprocess.Popen(
            [python, "-m", "thresher", "serve", "--port", str(self.port), "--no-access-log"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"
        wait_up(f"{self.base}/healthz", self.proc)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def chat(messages: list[dict], **compression: object) -> dict:
    return {"model": "fast", "max_tokens": 1, "messages": messages,
            "thresher": {"compression": {"when": "always", **compression}}}  # fmt: skip


def queue_report(answer: httpx.Response) -> str:
    stages = answer.json().get("thresher", {}).get("stages", [])
    found = next((s for s in stages if s["name"] == "compression"), {})
    queued = answer.headers.get("x-thresher-queue-ms")
    return f"queue_ms={queued}; stage_ms={found.get('ms', 0):.0f}; {found.get('detail', '')}"


def burst(base: str, text: list[str], burst_size: int, tries: int) -> dict:
    """key-a's ``burst_size`` long requests, then key-b's ``tries`` 2 s requests."""
    client = httpx.Client(base_url=base, timeout=120)
    for method in ("llmlingua", "llmlingua2"):  # models load before the clock runs
        client.post("/v1/chat/completions", headers=A,
                    json=chat([{"role": "user", "content": text[50]}], method=method, rate=0.5))
    long = [" ".join(text[i : i + 3]) + f" ({n})" for n, i in enumerate(range(0, 24, 3))]
    senders = [
        threading.Thread(target=client.post, args=("/v1/chat/completions",), kwargs={
            "headers": A, "json": chat([{"role": "user", "content": long[n % len(long)]}],
                                       method="llmlingua", rate=0.5, deadline_ms=8000)})
        for n in range(burst_size)
    ]  # fmt: skip
    for t in senders:
        t.start()
    time.sleep(1.0)
    latencies, reports = [], []
    for k in range(tries):
        body = chat([{"role": "user", "content": " ".join(text[40 + k : 43 + k])}], rate=0.5,
                    deadline_ms=2000)  # fmt: skip
        start = time.monotonic()
        answer = client.post("/v1/chat/completions", headers=B, json=body)
        latencies.append(time.monotonic() - start)
        reports.append(f"{answer.status_code}: {queue_report(answer)}")
    for t in senders:
        t.join(120)
    return {"b_latency_s": [round(x, 3) for x in latencies], "b_max_s": round(max(latencies), 3),
            "b_reports": reports}  # fmt: skip


def planning(base: str, text: list[str], messages: int) -> dict:
    """One chat of ``messages`` messages with a 1.5 s deadline, /healthz polled meanwhile."""
    body = chat([{"role": "user" if i % 2 == 0 else "assistant",
                  "content": text[i % 40][:300] + f" {i}"} for i in range(messages)],
                rate=0.5, deadline_ms=1500)  # fmt: skip
    out: dict = {}

    def send() -> None:
        start = time.monotonic()
        answer = httpx.post(f"{base}/v1/chat/completions", headers=B, json=body, timeout=300)
        out["latency_s"] = round(time.monotonic() - start, 3)
        out["status"] = answer.status_code

    sender = threading.Thread(target=send)
    sender.start()
    health = []
    while sender.is_alive():
        start = time.monotonic()
        httpx.get(f"{base}/healthz", timeout=60)
        health.append(time.monotonic() - start)
        time.sleep(0.05)
    sender.join()
    out["healthz_max_s"] = round(max(health), 3) if health else None
    out["healthz_n"] = len(health)
    return out


def compress_deadline(base: str, text: list[str], with_deadline: bool) -> dict:
    body: dict = {"context": " ".join(text[:20]), "rate": 0.5, "method": "llmlingua"}
    if with_deadline:
        body["deadline_ms"] = 800
    start = time.monotonic()
    answer = httpx.post(f"{base}/v1/compress", headers=A, json=body, timeout=300)
    if answer.status_code == 422 and "deadline_ms" in answer.text:  # a build without it
        return compress_deadline(base, text, with_deadline=False)
    return {"latency_s": round(time.monotonic() - start, 3), "status": answer.status_code,
            "deadline_ms": body.get("deadline_ms")}  # fmt: skip


def measure(python: str, backend: str, smoke: bool) -> dict:
    text = chunks()
    with tempfile.TemporaryDirectory() as home:
        served = Served(python, backend, Path(home))
        try:
            return {
                "burst": burst(served.base, text, 4 if smoke else 8, 1 if smoke else 5),
                "planning": planning(served.base, text, 4000 if smoke else 12_000),
                "compress_deadline": compress_deadline(served.base, text, True),
            }
        finally:
            served.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="Another checkout's Python to measure beside this one.")
    parser.add_argument("--smoke", action="store_true", help="Smaller runs; checks the target.")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON.")
    args = parser.parse_args()
    port = free_port()
    backend = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "fast_backend.py"), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        url = f"http://127.0.0.1:{port}/v1"
        load = Path("/proc/loadavg")
        results = {
            "load_before": load.read_text().split()[:3] if load.exists() else None,
            "this": measure(sys.executable, url, args.smoke),
        }
        if args.baseline:
            results["baseline"] = measure(args.baseline, url, args.smoke)
    finally:
        backend.kill()
        backend.wait()
    print(json.dumps(results, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.smoke and results["this"]["burst"]["b_max_s"] > 2.5:
        sys.exit(f"key-b's 2 s request took {results['this']['burst']['b_max_s']} s (target 2.5)")


if __name__ == "__main__":
    main()
