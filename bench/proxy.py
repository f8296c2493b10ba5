"""Proxy overhead: p50/p99 added latency and requests/s through ``thresher serve`` against a
loopback backend, compared with the same load sent to the backend direct, at the same
concurrency. The load comes from wrk (C, one thread, so it eats little of the CPU it measures);
without wrk, from a lean asyncio loop. The backend answers at once (``--delay-ms 0``: the proxy
saturates, and added latency is queueing) and after a short service time (50 ms, like a short
completion of a fast LLM server, where the proxy is not saturated). With ``--e2e``: long prompts
end to end on the local backend, with and without compression.

    python bench/proxy.py                   # 50 and 1 clients, delay 0 and 50 ms, 10 s each
    python bench/proxy.py --workers 2       # the proxy as 2 server processes
    python bench/proxy.py --workers 2 --delays 0 --clients 50 --repeat 5   # median of 5 runs
    python bench/proxy.py --smoke           # delay 0, 3 s each, well under a minute
    python bench/proxy.py --e2e --data ../shared/data/longqa.jsonl --stories 6
    python bench/proxy.py --peer litellm    # LiteLLM 1.110.2 with and without Thresher's guardrail
    python bench/proxy.py --peer litellm --rounds 10 --low-clients 1 4   # low concurrency

``--peer litellm`` runs LiteLLM's proxy (one worker; its venv from ``make litellm``) plain and
with :class:`thresher.api.integrations.litellm.ThresherGuardrail` on, and Thresher's proxy plain and
with the same pipeline defaults, against one backend (50 ms, 50 clients by default): what each adds
over direct, and what the guardrail adds to LiteLLM next to what the stages add to Thresher.
Saturated, LiteLLM's latency swings by 2x from run to run; ``--rounds N`` measures the same
servers at low concurrency instead (``--low-clients``, one sequential client by default;
``--per-round`` short requests and ``--long`` long prompts per configuration and round), all of
them up at once and interleaved round by round, with medians across rounds.

The proxy's CPU per request (user + system seconds of its processes / requests) is reported too:
it depends less on how busy the machine is than the latencies do (the host's speed still moves
it: 0.12-0.22 ms for the same code within an hour here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages, not another install of thresher
BODY = {
    "model": "fast",
    "max_tokens": 8,
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarise the plot of a short story in one line, please."},
    ],
}
WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    cmd: list[str], url: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen:
    """Start a server; ``log`` takes its stderr too (LiteLLM prints a banner and every request)."""
    err = open(log, "wb") if log else None
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    if err:
        err.close()  # the child has its own copy
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                where = f"; see {log}" if log else ""
                raise RuntimeError(f"{cmd} exited with {proc.returncode}{where}") from None
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError(url)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (uvicorn's workers), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_wrk(url: str, clients: int, seconds: float) -> dict[str, float]:
    """wrk's p50/p99 and requests/s (one thread: the generator's own CPU stays small)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % json.dumps(BODY))
    cmd = [
        "wrk",
        "-t1",
        f"-c{clients}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        script.name,
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"requests": requests, "p50_ms": ms("50%"), "p99_ms": ms("99%"), "rps": rps}


async def run_asyncio(url: str, clients: int, seconds: float) -> dict[str, float]:
    """The fallback load: ``clients`` closed-loop workers for ``seconds``, on the proxy's own
    lean keep-alive client (httpx's pool stalled for seconds at 50 clients here)."""
    from thresher.core.http1 import Http1Pool

    base, _, path = url.partition("/v1")
    pool = Http1Pool(
        base + "/v1", headers={"Content-Type": "application/json"}, timeout=30, max_idle=clients
    )
    body = json.dumps(BODY).encode()
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            status, answer = await pool.request("POST", path, body)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"{url} answered {status}: {answer[:200]!r}")

    began = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(clients)))
    finally:
        pool.close()
    wall = time.perf_counter() - began
    lat = np.array(latencies) * 1000
    return {
        "requests": len(lat),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "rps": len(lat) / wall,
    }


def measure(url: str, clients: int, seconds: float, pid: int) -> dict[str, float]:
    warm = httpx.post(url, json=BODY, timeout=30)
    warm.raise_for_status()
    load = run_wrk if shutil.which("wrk") else lambda *a: asyncio.run(run_asyncio(*a))
    load(url, clients, 1.0)  # warm-up at full concurrency: connections and pools filled
    before = cpu_seconds(pid)
    row = load(url, clients, seconds)
    row["cpu_ms_per_request"] = (cpu_seconds(pid) - before) * 1000 / max(1, row["requests"])
    return row


def overhead(
    delays: list[float], clients: list[int], seconds: float, workers: int, repeat: int = 1
) -> list[dict]:
    """Direct and proxied runs for each backend delay and client count, ``repeat`` times each.

    This VM's host speed drifts by up to 2x from one minute to the next, and with several
    workers the load generator's connections split between them by luck at connect time (wrk
    opens all of them at once): a single run says little, the median of several says more.
    """
    env = {
        **os.environ,
        "THRESHER_PRELOAD_MODELS": "false",
        "THRESHER_DATA_DIR": str(ROOT / ".thresher" / "bench"),
        "THRESHER_LOG_LEVEL": "WARNING",
    }
    tool = "wrk -t1" if shutil.which("wrk") else "asyncio+core.http1"
    print(f"load: {tool}, {seconds:g} s per run; proxy: {workers} worker process(es)")
    rows = []
    for delay in delays:
        backend_port, proxy_port = free_port(), free_port()
        backend_url = f"http://127.0.0.1:{backend_port}/v1"
        backend = start(
            [sys.executable, "bench/fast_backend.py", str(backend_port), "--delay-ms", str(delay)],
            f"{backend_url}/models",
        )
        serve = [sys.executable, "-m", "thresher", "serve", "--port", str(proxy_port),
                 "--backend", backend_url, "--model", "fast", "--workers", str(workers),
                 "--no-access-log"]  # fmt: skip
        proxy = start(serve, f"http://127.0.0.1:{proxy_port}/healthz", env)
        try:
            for n in clients:
                runs = []
                for _ in range(repeat):
                    direct = measure(f"{backend_url}/chat/completions", n, seconds, backend.pid)
                    proxied = measure(
                        f"http://127.0.0.1:{proxy_port}/v1/chat/completions", n, seconds, proxy.pid
                    )
                    row = {"delay_ms": delay, "clients": n, "direct": direct, "proxy": proxied,
                           "p50_added_ms": proxied["p50_ms"] - direct["p50_ms"],
                           "p99_added_ms": proxied["p99_ms"] - direct["p99_ms"]}  # fmt: skip
                    runs.append(row)
                    print(
                        f"delay {delay:4g} ms  {n:3d} clients | direct p50 "
                        f"{direct['p50_ms']:7.2f} p99 {direct['p99_ms']:7.2f} ms "
                        f"{direct['rps']:7.0f} req/s | proxy p50 {proxied['p50_ms']:7.2f} p99 "
                        f"{proxied['p99_ms']:7.2f} ms {proxied['rps']:7.0f} req/s | added p50 "
                        f"{row['p50_added_ms']:+7.2f} p99 {row['p99_added_ms']:+7.2f} ms | "
                        f"proxy CPU {proxied['cpu_ms_per_request']:.2f} ms/req"
                    )
                rows += runs
                if repeat > 1:
                    summarise(runs)
        finally:
            for proc in (proxy, backend):
                proc.terminate()
                proc.wait(20)
    return rows


def summarise(runs: list[dict]) -> None:
    """The median run's figures, and the range over all runs, for one delay and client count."""

    def spread(values: list[float], fmt: str) -> str:
        return f"{np.median(values):{fmt}} ({min(values):{fmt}} .. {max(values):{fmt}})"

    added50 = [r["p50_added_ms"] for r in runs]
    added99 = [r["p99_added_ms"] for r in runs]
    rps = [r["proxy"]["rps"] for r in runs]
    cpu = [r["proxy"]["cpu_ms_per_request"] for r in runs]
    print(
        f"  median of {len(runs)}: added p50 {spread(added50, '+.2f')} ms, "
        f"p99 {spread(added99, '+.2f')} ms, proxy {spread(rps, '.0f')} req/s, "
        f"CPU {spread(cpu, '.2f')} ms/req"
    )


def end_to_end(data: Path, stories: int, rate: float, method: str | None, max_tokens: int) -> None:
    """Total time per long prompt through the proxy on the local backend, compressed or not."""
    from fastapi.testclient import TestClient

    from thresher.api.app import create_app
    from thresher.api.settings import service_settings

    rows = [json.loads(line) for line in data.read_text().splitlines()[:stories]]
    settings = service_settings(data_dir=ROOT / ".thresher" / "bench", compress_min_tokens=0)
    results = []
    with TestClient(create_app(settings)) as client:
        model = settings.local_model
        # Untimed: the first generation and the first compression pay one-off warm-up costs.
        warm = [{"role": "user", "content": rows[0]["context"][:2000]}]
        options = {"rate": rate, **({"method": method} if method else {})}
        for thresher in (None, {"compression": options}):
            body = {"model": model, "messages": warm, "max_tokens": 2}
            client.post("/v1/chat/completions", json={**body, "thresher": thresher})
        for row in rows:
            messages = [
                {"role": "system", "content": "Answer the question about the story briefly."},
                {"role": "user", "content": row["context"]},
                {"role": "user", "content": row["question"]},
            ]
            row_result = {}
            for label, thresher in (
                ("plain", None),
                ("compressed", {"compression": options}),
            ):
                body = {"model": model, "messages": messages, "max_tokens": max_tokens,
                        "temperature": 0}  # fmt: skip
                if thresher:
                    body["thresher"] = thresher
                t0 = time.perf_counter()
                answer = client.post("/v1/chat/completions", json=body).json()
                seconds = time.perf_counter() - t0
                stages = {s["name"]: s["ms"] for s in answer["thresher"]["stages"]}
                row_result[label] = {
                    "seconds": seconds,
                    "prompt_tokens": answer["usage"]["prompt_tokens"],
                    "compression_ms": stages.get("compression", 0.0),
                }
            results.append(row_result)
            plain, comp = row_result["plain"], row_result["compressed"]
            print(
                f"{row['id'][:40]:<40} plain {plain['seconds']:6.2f} s "
                f"{plain['prompt_tokens']:5d} tok"
                f" | compressed {comp['seconds']:6.2f} s {comp['prompt_tokens']:5d} tok "
                f"(compression {comp['compression_ms'] / 1000:5.2f} s)"
            )
    total = {k: sum(r[k]["seconds"] for r in results) for k in ("plain", "compressed")}
    tokens = {k: sum(r[k]["prompt_tokens"] for r in results) for k in ("plain", "compressed")}
    print(
        f"total    plain {total['plain']:.1f} s, {tokens['plain']} prompt tokens | compressed "
        f"{total['compressed']:.1f} s, {tokens['compressed']} prompt tokens "
        f"({method or 'default method'}, rate {rate}); "
        f"time ratio {total['compressed'] / total['plain']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="delay 0 only, 3 s per run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 1])
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 50.0],
                        help="backend service times in ms")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="proxy server processes")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting (median shown)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--e2e", action="store_true", help="long prompts on the local backend")
    parser.add_argument("--data", type=Path, default=ROOT / "tests/data/api/longqa_small.jsonl")
    parser.add_argument("--stories", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--method", help="compression method (default: the service's)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--peer", choices=["litellm"], help="side by side with a peer proxy")
    parser.add_argument("--litellm-python", type=Path,
                        default=Path.home() / ".cache/thresher/litellm-venv/bin/python",
                        help="the python of LiteLLM's venv (make litellm)")  # fmt: skip
    parser.add_argument("--long", type=int, default=3,
                        help="--peer: long prompts timed one by one per server")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=0,
                        help="--peer: low concurrency, this many interleaved rounds")  # fmt: skip
    parser.add_argument("--per-round", type=int, default=40,
                        help="--rounds: short requests per configuration and round")  # fmt: skip
    parser.add_argument("--low-clients", type=int, nargs="+", default=[1],
                        help="--rounds: concurrent clients (1: sequential)")  # fmt: skip
    args = parser.parse_args()
    if args.peer == "litellm" and args.rounds:
        from litellm_peer import litellm_rounds  # bench/ is sys.path[0]

        rounds, per_round = (2, 10) if args.smoke else (args.rounds, args.per_round)
        out = litellm_rounds(
            args.delays[-1], args.low_clients, rounds, per_round, 1 if args.smoke else args.long,
            args.litellm_python, args.data,
        )  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
        return
    if args.peer == "litellm":
        from litellm_peer import litellm_peer  # bench/ is sys.path[0]

        seconds = 3.0 if args.smoke else args.seconds
        delay = args.delays[-1] if not args.smoke else 50.0
        long = 1 if args.smoke else args.long
        rows = litellm_peer(
            delay, args.clients[0], seconds, args.repeat, args.litellm_python, args.data, long
        )
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return
    if args.e2e:
        stories = 1 if args.smoke else args.stories
        end_to_end(args.data, stories, args.rate, args.method, args.max_tokens)
        return
    seconds, delays = (3.0, [0.0]) if args.smoke else (args.seconds, args.delays)
    rows = overhead(delays, args.clients, seconds, args.workers, args.repeat)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
