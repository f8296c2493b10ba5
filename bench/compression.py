"""Prompt compression: Thresher against llmlingua==0.2.2 on long-context QA at 3x.

For each item (a mystery story and its closing question, ../shared/data/longqa.jsonl) every
method compresses the story at rate 0.33; the table gives seconds per item, tokens per second
(original tokens over compression time), the achieved ratio (cl100k_base tokens), and answer
retention: the mean log-prob of the gold answer given (compressed prompt + question) minus the
same given the original, scored by the same small LM in float32 (0 = nothing lost). The peer runs
in its own venv (bash bench/setup_llmlingua.sh) as a worker process; items alternate between
methods so that a busy machine slows all of them alike.

    python bench/compression.py            # 30 items
    python bench/compression.py --smoke    # 2 short items, no peer unless --peer
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "longqa.jsonl"
PEER_VENV = ROOT / "bench" / ".venv-llmlingua"
PEER_MODEL = ROOT / "bench" / ".models" / "smollm2-peer"
ANSWER_TOKENS = 64  # gold answers are scored on their first tokens (the solution's opening)


@dataclass
class Tally:
    seconds: list[float] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)
    compressed: list[int] = field(default_factory=list)
    retention: list[float] = field(default_factory=list)


class Peer:
    """llmlingua's PromptCompressor in a worker process of the peer venv."""

    def __init__(self, mode: str, rate: float, threads: int) -> None:
        from core.tokens import seed_tiktoken_cache

        env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(seed_tiktoken_cache()), HF_HUB_OFFLINE="1")
        self.proc = subprocess.Popen(
            [
                str(PEER_VENV / "bin" / "python"),
                str(ROOT / "bench" / "llmlingua_peer.py"),
                "--folder",
                str(PEER_MODEL),
                "--mode",
                mode,
                "--rate",
                str(rate),
                "--threads",
                str(threads),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit("the llmlingua worker died; run: bash bench/setup_llmlingua.sh")
        return json.loads(line)

    def __call__(self, item: dict) -> tuple[str, float]:
        self.proc.stdin.write(json.dumps(item) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        out = self._read()
        return out["text"], out["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--rate", type=float, default=0.33)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--smoke", action="store_true", help="2 short items, a minute or so")
    parser.add_argument("--peer", action="store_true", help="run the peer in --smoke mode too")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--dtype", default="bfloat16", help="Thresher's scoring LM dtype")
    parser.add_argument("--methods", default="llmlingua,longllmlingua,selective-context")
    parser.add_argument("--peer-modes", default="llmlingua,longllmlingua")
    parser.add_argument("--out", type=Path, help="write the table and per-item rows as JSON")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for Thresher and the peer alike"
    )
    parser.add_argument("--judge-dtype", default="float32", help="dtype of the retention LM")
    parser.add_argument(
        "--match", action="store_true", help="also run Thresher at the peer's achieved length"
    )
    args = parser.parse_args()

    import torch

    from compression import get_compressor
    from core.models import ModelProvider

    # A shared, busy machine: more threads than free cores make torch spin; both sides get
    # the same count.
    torch.set_num_threads(args.threads)

    rows = [json.loads(line) for line in args.data.open()]
    if args.smoke:
        rows = sorted(rows, key=lambda r: len(r["context"]))[:2]
    else:
        rows = rows[: args.items]
    provider = ModelProvider(device="cpu")
    counter = provider.token_counter("cl100k_base")
    judge = provider.scorer(dtype=args.judge_dtype)
    scorer = provider.scorer(dtype=args.dtype)
    methods = {
        f"thresher {name}": get_compressor(name, scorer=scorer, counter=counter)
        for name in args.methods.split(",")
    }
    run_peer = not args.no_peer and (args.peer or not args.smoke)
    peers = {}
    if run_peer:
        if not (PEER_VENV / ".installed").exists() or not PEER_MODEL.exists():
            raise SystemExit("the peer is not set up; run: bash bench/setup_llmlingua.sh")
        peers = {
            f"llmlingua-0.2.2 {m}": Peer(m, args.rate, args.threads)
            for m in args.peer_modes.split(",")
        }
    rng = random.Random(0)
    # The peer often keeps more than asked; Thresher at the peer's own achieved length gives
    # the retention comparison at equal ratio.
    matched = {f"{name} @peer length": c for name, c in methods.items() if peers and args.match}
    names = [*methods, *matched, *peers, "random drop"]
    tallies: dict[str, Tally] = {name: Tally() for name in names}
    per_item = []

    def retention(prompt: str, answer_ids: list[int], base: float | None = None) -> float:
        prefix = judge.encode(prompt + "\nAnswer:")
        lp = judge.logprobs_ids([prefix + answer_ids])[0][len(prefix) :]
        return float(lp.mean()) - (base or 0.0)

    for row in tqdm(rows, desc="items", unit="item"):
        context, question = row["context"], row["question"]
        original = context + "\n\n" + question
        origin = counter.count(original)
        answer_ids = judge.encode(" " + row["answer"])[:ANSWER_TOKENS]
        base = retention(original, answer_ids)
        outputs: dict[str, tuple[str, float]] = {}
        for name, compressor in methods.items():
            start = time.perf_counter()
            result = compressor.compress(context, question=question, rate=args.rate)
            outputs[name] = (result.text, time.perf_counter() - start)
        for name, peer in peers.items():
            outputs[name] = peer({"context": context, "question": question})
        peer_text = next(iter(outputs[n][0] for n in peers), None)
        for name, compressor in matched.items():
            start = time.perf_counter()
            budget = counter.count(peer_text or "")
            result = compressor.compress(context, question=question, target_tokens=budget)
            outputs[name] = (result.text, time.perf_counter() - start)
        start = time.perf_counter()
        ids = counter.encode(context)
        keep = sorted(rng.sample(range(len(ids)), round(len(ids) * args.rate)))
        dropped = counter.decode([ids[i] for i in keep]) + "\n\n" + question
        outputs["random drop"] = (dropped, time.perf_counter() - start)
        item = {"id": row["id"], "origin_tokens": origin}
        for name, (text, seconds) in outputs.items():
            t = tallies[name]
            t.seconds.append(seconds)
            t.origin.append(origin)
            t.compressed.append(counter.count(text))
            t.retention.append(retention(text, answer_ids, base))
            item[name] = {"seconds": seconds, "tokens": t.compressed[-1], "ret": t.retention[-1]}
        per_item.append(item)
        if args.out:  # after every item, atomically: a long run that dies keeps what it did
            tmp = args.out.with_suffix(".tmp")
            table = report(tallies, len(per_item), args.rate)
            tmp.write_text(json.dumps({"table": table, "items": per_item}, indent=1))
            os.replace(tmp, args.out)

    print(report(tallies, len(rows), args.rate))
    for peer in peers.values():
        peer.close()


def report(tallies: dict[str, Tally], n: int, rate: float) -> str:
    lines = [
        f"{n} items, rate {rate} (target {1 / rate:.1f}x), answer retention = mean gold-answer "
        "log-prob given compressed minus given original (higher is better, 0 = lossless)",
        "",
        "| method | s/item | tokens/s | ratio | retention | vs peer speed |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    peer = tallies.get("llmlingua-0.2.2 llmlingua")
    for name, t in tallies.items():
        if not t.seconds:
            continue
        sec = float(np.mean(t.seconds))
        tps = sum(t.origin) / max(sum(t.seconds), 1e-9)
        ratio = sum(t.origin) / max(sum(t.compressed), 1)
        speed = f"{np.mean(peer.seconds) / sec:.1f}x" if peer and peer.seconds else "-"
        lines.append(
            f"| {name} | {sec:.2f} | {tps:.0f} | {ratio:.2f} | {np.mean(t.retention):+.3f} "
            f"| {speed} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
