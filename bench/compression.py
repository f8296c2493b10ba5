"""Prompt compression: Thresher against llmlingua==0.2.2 on long-context QA at 3x.

For each item (a mystery story and its closing question, ../shared/data/longqa.jsonl) every
method compresses the story at rate 0.33; the table gives seconds per item, milliseconds per
1,000 original tokens, the achieved ratio (cl100k_base tokens), and answer
retention: the mean log-prob of the gold answer given (compressed prompt + question) minus the
same given the original, scored by the same small LM in float32 (0 = nothing lost). The peer runs
in its own venv (bash bench/setup_llmlingua.sh) as a worker process; items alternate between
methods so that a busy machine slows all of them alike.

    python bench/compression.py --peer-modes llmlingua longllmlingua   # 30 items
    python bench/compression.py --smoke    # 2 short items, no peer unless --peer
    python bench/compression.py --task needles --reader --items 24   # planted facts, SmolLM2 reads
    python bench/compression.py --task longqa --reader --items 24    # multiple-choice stories
    python bench/compression.py --task needles --speed --items 20 --threads 2   # the floor

``--reader`` adds the reader's accuracy (bench/reader_tasks.py: SmolLM2 answers from the
compressed prompt; right when its answer holds the gold one) beside the full text's. Method
``llmlingua2:lexical`` / ``llmlingua2:none`` runs llmlingua2 with another sentence ranker;
options follow as ``key=value``: ``llmlingua2:embedder:whole_share=0.8:window=512`` (``window``:
the classifier's tokens per window). ``--seed`` draws other needle items (tune on one seed,
report on the default).

``--speed`` (bench/service_speed.py) times llmlingua2 through the service against one float32
forward pass of its classifier over the same tokens and against the project's llmlingua, once
per CPU configuration (``--cpu native avx2``: as it is, and with torch held to AVX2 kernels as on
a CPU without native bf16), each in a child process; it fails if bf16 is chosen where emulated.

Speed is reported against the peer mode doing the same job (its longllmlingua mode for
Thresher's longllmlingua) and against the peer's llmlingua mode. The table and per-item rows
are rewritten to bench/results/compression.json after every item, so a stopped run still
leaves a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from embedcache import shared_data
from tqdm import tqdm

from thresher.core.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = shared_data(required=False) / "longqa.jsonl"
PEER_VENV = ROOT / "bench" / ".venv-llmlingua"
PEER_MODEL = ROOT / "bench" / ".models" / "smollm2-peer"
ANSWER_TOKENS = 64  # gold answers are scored on their first tokens (the solution's opening)


@dataclass
class Tally:
    seconds: list[float] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)
    compressed: list[int] = field(default_factory=list)
    retention: list[float] = field(default_factory=list)
    correct: list[float] = field(default_factory=list)


class Peer:
    """llmlingua's PromptCompressor in a worker process of the peer venv."""

    def __init__(self, mode: str, rate: float, threads: int) -> None:
        from thresher.core.tokens import seed_tiktoken_cache

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


# Which peer mode does the same job as each Thresher method (speed is compared like for like).
LIKE = {
    "llmlingua": "llmlingua",
    "longllmlingua": "longllmlingua",
    "selective-context": "llmlingua",
    "llmlingua2": "llmlingua",
}
OUT = ROOT / "bench" / "results" / "compression.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--rate", type=float, default=0.33)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--smoke", action="store_true", help="2 short items, a minute or so")
    parser.add_argument("--peer", action="store_true", help="run the peer in --smoke mode too")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--dtype", default="auto", help="compression's models' dtype (auto: chosen for this CPU)"
    )
    parser.add_argument("--methods", nargs="+", default=list(LIKE))
    parser.add_argument("--task", choices=["longqa", "needles"], default="longqa")
    parser.add_argument("--seed", type=int, default=14, help="which needle items (--task needles)")
    parser.add_argument(
        "--start", type=int, default=0, help="skip the first rows (report on rows not tuned on)"
    )
    parser.add_argument("--reader", action="store_true", help="also score a SmolLM2 reader")
    parser.add_argument("--peer-modes", nargs="+", default=["llmlingua", "longllmlingua"])
    parser.add_argument(
        "--out",
        type=Path,
        help=f"table + per-item rows as JSON, rewritten after every item "
        f"(default {OUT.relative_to(ROOT)}; smoke runs write beside it with a _smoke suffix)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for Thresher and the peer alike"
    )
    parser.add_argument("--judge-dtype", default="float32", help="dtype of the retention LM")
    parser.add_argument(
        "--match", action="store_true", help="also run Thresher at the peer's achieved length"
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the items already in the output, run the rest"
    )
    parser.add_argument("--speed", action="store_true", help="the service against its floor")
    parser.add_argument("--cpu", nargs="+", default=["native", "avx2"], help="--speed configs")
    parser.add_argument(
        "--llmlingua-items", type=int, default=6, help="--speed: items also run with llmlingua"
    )
    parser.add_argument("--speed-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods_wanted = [m for arg in args.methods for m in arg.split(",") if m]
    peer_modes = [m for arg in args.peer_modes for m in arg.split(",") if m]
    stem = (
        "compression" if args.task == "longqa" and not args.reader else f"compression_{args.task}"
    )
    if args.speed:
        stem = "compression_speed"
    default_out = OUT.with_name(f"{stem}{'_reader' if args.reader else ''}.json")
    out_path = args.out or (
        default_out.with_name(default_out.stem + "_smoke.json") if args.smoke else default_out
    )

    import torch

    from thresher.compression import get_compressor
    from thresher.core.models import ModelProvider

    # A shared, busy machine: more threads than free cores make torch spin; both sides get
    # the same count.
    torch.set_num_threads(args.threads)

    rows = [json.loads(line) for line in args.data.open()]
    if args.task == "needles":
        from reader_tasks import needles

        n, chars = (2, 2500) if args.smoke else (args.items, 5000)
        rows = needles(rows, n, seed=args.seed, chars=chars)
    elif args.reader:  # short gold answers only: the multiple-choice stories, choices asked
        rows = [
            dict(r, question=f"{r['question']} Choices: {', '.join(r['choices'])}.")
            for r in rows
            if r.get("choices")
        ]
    if args.smoke and args.task == "longqa":
        rows = sorted(rows, key=lambda r: len(r["context"]))[:2]
    else:
        rows = rows[args.start : args.start + args.items]
    if args.speed_child:  # one CPU configuration of --speed, in this process
        from service_speed import measure

        print(json.dumps(measure(rows, args.rate, args.llmlingua_items)))
        return
    if args.speed:
        from service_speed import run_configs

        results = run_configs(sys.argv[1:], args.cpu, out_path)
        if results.get("avx2", {}).get("compression_dtype", {}).get("value") == "bfloat16":
            raise SystemExit("bf16 was chosen with torch held to AVX2 kernels (emulated bf16)")
        return
    provider = ModelProvider(device="cpu")
    counter = provider.token_counter("cl100k_base")
    judge = provider.scorer(dtype=args.judge_dtype)
    dtype = provider.compression_dtype() if args.dtype == "auto" else args.dtype
    print(f"compression dtype {dtype} ({provider.compression_precision().reason})")
    scorer = provider.scorer(dtype=dtype)
    reader = None
    if args.reader:
        from reader_tasks import Reader

        reader = Reader(provider)

    def build(spec: str):
        name, *parts = spec.split(":")
        if name != "llmlingua2":
            return name, get_compressor(name, scorer=scorer, counter=counter)
        options: dict = {}
        for part in parts:
            key, eq, value = part.partition("=")
            options.update({key: float(value)} if eq else {"ranker": part})
        classifier = provider.token_classifier(dtype=dtype)
        if "window" in options:
            classifier = copy.copy(classifier)
            classifier.max_length = int(options.pop("window"))
        embedder = provider.embedder(dtype=dtype)
        return name, get_compressor(
            name, scorer=classifier, counter=counter, embedder=embedder, **options
        )

    methods = {f"thresher {spec}": build(spec) for spec in methods_wanted}
    run_peer = not args.no_peer and (args.peer or not args.smoke)
    peers = {}
    if run_peer:
        if not (PEER_VENV / ".installed").exists() or not PEER_MODEL.exists():
            raise SystemExit("the peer is not set up; run: bash bench/setup_llmlingua.sh")
        peers = {f"llmlingua-0.2.2 {m}": Peer(m, args.rate, args.threads) for m in peer_modes}
    # The peer often keeps more than asked; Thresher at the length the like-for-like peer mode
    # achieved gives the retention comparison at equal ratio.
    matched = {
        f"{label} @peer length": (name, c, f"llmlingua-0.2.2 {LIKE[name]}")
        for label, (name, c) in methods.items()
        if args.match and f"llmlingua-0.2.2 {LIKE[name]}" in peers
    }
    like = {label: f"llmlingua-0.2.2 {LIKE[name]}" for label, (name, _) in methods.items()}
    like.update({label: peer for label, (_, _, peer) in matched.items()})
    names = [*methods, *peers, *matched, "random drop"]
    if reader is not None:
        names.append("full text")
    tallies: dict[str, Tally] = {name: Tally() for name in names}
    per_item: list[dict] = []
    if args.resume and out_path.exists():
        per_item = json.loads(out_path.read_text())["items"]
        for item in per_item:
            for name, done in item.items():
                if name in tallies:
                    t = tallies[name]
                    t.seconds.append(done["seconds"])
                    t.origin.append(item["origin_tokens"])
                    t.compressed.append(done["tokens"])
                    t.retention.append(done["ret"])
    finished = {item["id"] for item in per_item}

    def thresher(compressor, context: str, question: str, **budget) -> tuple[str, float]:
        start = time.perf_counter()
        result = compressor.compress(context, question=question, **budget)
        return result.text, time.perf_counter() - start

    for n, row in enumerate(tqdm(rows, desc="items", unit="item")):
        if row["id"] in finished:
            continue
        context, question = row["context"], row["question"]
        original = context + "\n\n" + question
        origin = counter.count(original)
        item_in = {"context": context, "question": question}
        order: list[str] = [*methods, *peers]
        # Rotate the order every item, so load that drifts during an item hits every method.
        order = order[n % len(order) :] + order[: n % len(order)]
        outputs: dict[str, tuple[str, float]] = {}
        for name in order:
            if name in methods:
                outputs[name] = thresher(methods[name][1], context, question, rate=args.rate)
            else:
                outputs[name] = peers[name](item_in)
        for name, (_, c, peer) in matched.items():
            budget = counter.count(outputs[peer][0])
            outputs[name] = thresher(c, context, question, target_tokens=budget)
        start = time.perf_counter()
        ids = counter.encode(context)
        rng = random.Random(row["id"])  # per item, so a resumed run drops the same tokens
        keep = sorted(rng.sample(range(len(ids)), round(len(ids) * args.rate)))
        dropped = counter.decode([ids[i] for i in keep]) + "\n\n" + question
        outputs["random drop"] = (dropped, time.perf_counter() - start)
        answer_ids = judge.encode(" " + row["answer"])[:ANSWER_TOKENS]
        labels = ["original", *outputs]
        prompts = [original, *(text for text, _ in outputs.values())]
        scores = retention(judge, prompts, answer_ids)
        item = {"id": row["id"], "origin_tokens": origin}
        if reader is not None:
            outputs["full text"] = (original, 0.0)
            scores.append(scores[0])
            labels.append("full text")
        for name, (text, seconds) in outputs.items():
            t = tallies[name]
            t.seconds.append(seconds)
            t.origin.append(origin)
            t.compressed.append(counter.count(text))
            t.retention.append(scores[labels.index(name)] - scores[0])
            item[name] = {"seconds": seconds, "tokens": t.compressed[-1], "ret": t.retention[-1]}
            if reader is not None:
                t.correct.append(float(reader.correct(text, row["answer"])))
                item[name]["correct"] = t.correct[-1]
        per_item.append(item)
        # After every item, atomically: a run that is stopped keeps a table of what it did.
        table = report(tallies, len(per_item), args.rate, like)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            out_path,
            json.dumps({"command": sys.argv[1:], "table": table, "items": per_item}, indent=1),
        )

    print(report(tallies, len(per_item), args.rate, like))
    for peer in peers.values():
        peer.close()


def retention(judge, prompts: list[str], answer_ids: list[int]) -> list[float]:
    """Mean log-prob of the gold answer's tokens after each prompt, one batched judge call."""
    prefixes = [judge.encode(p + "\nAnswer:") for p in prompts]
    scores = judge.logprobs_ids([p + answer_ids for p in prefixes])
    return [float(s[len(p) :].mean()) for p, s in zip(prefixes, scores, strict=True)]


def report(tallies: dict[str, Tally], n: int, rate: float, like: dict[str, str]) -> str:
    peer_ll = tallies.get("llmlingua-0.2.2 llmlingua")
    lines = [
        f"{n} items, rate {rate} (target {1 / rate:.1f}x), answer retention = mean gold-answer "
        "log-prob given compressed minus given original (higher is better, 0 = lossless); "
        "speed vs the peer mode doing the same job (llmlingua for llmlingua and "
        "selective-context, longllmlingua for longllmlingua) and vs the peer's llmlingua mode",
        "",
        "| method | s/item | ms/1k tokens | ratio | retention | reader | speed vs same-job peer "
        "| speed vs peer llmlingua |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def speed(peer: Tally | None, sec: float) -> str:
        return f"{np.mean(peer.seconds) / sec:.1f}x" if peer and peer.seconds and sec else "-"

    for name, t in tallies.items():
        if not t.seconds:
            continue
        sec = float(np.mean(t.seconds))
        ratio = sum(t.origin) / max(sum(t.compressed), 1)
        same = tallies.get(like.get(name, ""))
        acc = f"{np.mean(t.correct):.2f}" if t.correct else "-"
        ms = f"{1000 * sum(t.seconds) / max(sum(t.origin), 1) * 1000:.0f}" if sec else "-"
        lines.append(
            f"| {name} | {sec:.2f} | {ms} | {ratio:.2f} | {np.mean(t.retention):+.3f} | {acc} "
            f"| {speed(same, sec)} | {speed(peer_ll, sec) if name in like else '-'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
