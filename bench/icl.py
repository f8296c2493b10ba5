"""In-context classification accuracy of each retriever against ``random``, with a small LM.

For every test query: retrieve k demonstrations from the task's pool, order them (most similar
last), assemble the prompt under a token budget counted with the LM's own tokenizer, and score
each label as the continuation; the label with the highest log-prob is the prediction. The
prompt prefix is run once per query and its KV cache shared by all labels.

    python bench/icl.py --smoke
    python bench/icl.py --data ../shared/data/icl --k 4 8 --n-test 100

Results are appended per (task, method, k) to ``--out`` (JSON Lines) so an interrupted run
resumes where it stopped; the summary table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embedcache import cached_encode  # noqa: E402
from tqdm import tqdm  # noqa: E402

from thresher.core.errors import InputError  # noqa: E402
from thresher.core.models import ModelProvider  # noqa: E402
from thresher.prompting import (  # noqa: E402
    RETRIEVER_NAMES,
    Pool,
    assemble,
    demonstration,
    get_orderer,
    get_retriever,
)

# Every retriever is scored on --n-test queries, except that --n-test-other may cut the rest.
CHEAP = ("random", "knn", "bm25")

# The intent task ships in tests/data; pass --data ../shared/data/icl for all three tasks.
DATA = os.environ.get(
    "THRESHER_ICL_DATA", str(Path(__file__).resolve().parents[1] / "tests" / "data" / "prompting")
)


def load_task(folder: Path, task: str) -> tuple[list, list[dict], dict]:
    def rows(split: str) -> list[dict]:
        with open(folder / f"{task}_{split}.jsonl", encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    meta = json.loads((folder / f"{task}_labels.json").read_text())
    pool = [demonstration(r["id"], r["text"], label=r["label"]) for r in rows("pool")]
    return pool, rows("test"), meta


class LabelScorer:
    """Log-prob of each label after a prompt: one prefix forward, labels batched on its cache.

    The task instruction opens every prompt, so its KV cache is computed once and copied for
    each query; only the demonstrations and the query run through the model per prompt.
    """

    def __init__(self, scorer, labels: list[str], shared: str | None = None) -> None:
        import torch

        self.torch = torch
        self.scorer = scorer
        self.labels = labels
        self.label_ids = [scorer.encode(" " + label) for label in labels]
        width = max(len(ids) for ids in self.label_ids)
        self.batch = torch.full((len(labels), width), scorer.pad_id, dtype=torch.long)
        for i, ids in enumerate(self.label_ids):
            self.batch[i, : len(ids)] = torch.tensor(ids)
        self.shared_ids = [scorer.start_id, *(scorer.encode(shared) if shared else [])]
        with torch.inference_mode():
            out = scorer.model(input_ids=torch.tensor([self.shared_ids]), use_cache=True)
        self.shared_cache = out.past_key_values

    def __call__(self, prompt: str) -> np.ndarray:
        import copy

        torch = self.torch
        model = self.scorer.model
        ids = [self.scorer.start_id, *self.scorer.encode(prompt)]
        n = len(self.shared_ids)
        cache = None
        if len(ids) > n and ids[:n] == self.shared_ids:
            cache, ids = copy.deepcopy(self.shared_cache), ids[n:]
        with torch.inference_mode():
            out = model(
                input_ids=torch.tensor([ids]),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            first = torch.log_softmax(out.logits[0, -1].float(), -1)
            if self.batch.shape[1] == 1:  # single-token labels: the prefix forward is enough
                return np.array([float(first[ids[0]]) for ids in self.label_ids])
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(self.labels))
            rest = model(input_ids=self.batch, past_key_values=cache, use_cache=False)
            logp = torch.log_softmax(rest.logits.float(), -1)
        scores = np.zeros(len(self.labels))
        for i, ids in enumerate(self.label_ids):
            total = float(first[ids[0]])
            for j in range(1, len(ids)):
                total += float(logp[i, j - 1, ids[j]])
            scores[i] = total
        return scores


def run(args: argparse.Namespace) -> list[dict]:
    import torch

    torch.set_num_threads(args.threads)
    provider = ModelProvider(device="cpu", dtype=args.dtype)
    embedder = provider.embedder()
    scorer = provider.scorer()
    counter = provider.token_counter("SmolLM2-135M-Instruct")
    out = Path(args.out)
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done[(row["task"], row["method"], row["k"], row["n_test"])] = row
    rows = []
    for task in args.tasks:
        pool_records, all_test, meta = load_task(Path(args.data), task)
        # One fixed permutation: a smaller n is always a prefix of a larger one.
        perm = np.random.default_rng(args.seed).permutation(len(all_test))
        all_test = [all_test[i] for i in perm]
        pool_vectors = cached_encode(
            embedder, [r.content for r in pool_records], label=f"icl-{task}-pool"
        )
        pool = Pool(embedder).fit(pool_records, embeddings=pool_vectors)
        all_vectors = cached_encode(
            embedder, [r["text"] for r in all_test], label=f"icl-{task}-test"
        )
        labels = meta["labels"]
        label_scorer = LabelScorer(scorer, labels, shared=meta["instruction"])
        orderer = get_orderer("similarity")
        for method in args.methods:
            n = args.n_test if method in CHEAP or args.n_test_other is None else args.n_test_other
            test, vectors = all_test[:n], all_vectors[:n]
            retriever = get_retriever(method, seed=args.seed)
            fit_start = time.perf_counter()
            retriever.fit(pool)
            fit_s = time.perf_counter() - fit_start
            for k in args.k:
                key = (task, method, k, len(test))
                if key in done:
                    rows.append(done[key])
                    continue
                correct, tokens, kept, zero_shot = 0, [], [], 0
                start = time.perf_counter()
                for row, vec in tqdm(
                    list(zip(test, vectors, strict=True)),
                    desc=f"{task} {method} k={k}",
                    leave=False,
                ):
                    result = orderer.order(retriever.retrieve(row["text"], k, vector=vec))
                    build = partial(
                        assemble,
                        row["text"],
                        counter=counter,
                        budget_tokens=args.budget,
                        instruction=meta["instruction"],
                    )
                    try:
                        prompt = build(result)
                    except InputError:  # a long query with a long demonstration: go zero-shot
                        prompt = build([])
                        zero_shot += 1
                    pred = labels[int(np.argmax(label_scorer(prompt.prompt)))]
                    correct += pred == row["label"]
                    tokens.append(prompt.tokens)
                    kept.append(len(prompt.demonstrations))
                entry = {
                    "task": task,
                    "method": method,
                    "k": k,
                    "n_test": len(test),
                    "accuracy": correct / len(test),
                    "mean_tokens": float(np.mean(tokens)),
                    "mean_kept": float(np.mean(kept)),
                    "zero_shot": zero_shot,
                    "fit_s": round(fit_s, 2),
                    "seconds": round(time.perf_counter() - start, 1),
                    "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                }
                print(json.dumps(entry), flush=True)
                with open(out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(entry) + "\n")
                rows.append(entry)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| task | k | method | accuracy | vs random (points) | kept | prompt tokens |"]
    lines.append("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    base = {(r["task"], r["k"]): r["accuracy"] for r in rows if r["method"] == "random"}
    for r in rows:
        ref = base.get((r["task"], r["k"]))
        delta = f"{100 * (r['accuracy'] - ref):+.1f}" if ref is not None else "n/a"
        lines.append(
            f"| {r['task']} (n={r['n_test']}) | {r['k']} | {r['method']} | "
            f"{100 * r['accuracy']:.1f} | {delta} | {r['mean_kept']:.1f} | {r['mean_tokens']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["intent", "rotten_tomatoes", "amazon_food"])
    parser.add_argument("--methods", nargs="+", default=list(RETRIEVER_NAMES))
    parser.add_argument("--k", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--n-test", type=int, default=100, help="test queries per task (subsample)")
    parser.add_argument(
        "--n-test-other",
        type=int,
        default=None,
        help=f"test queries for retrievers other than {', '.join(CHEAP)} (default: --n-test)",
    )
    parser.add_argument("--budget", type=int, default=1024, help="prompt token budget")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=DATA, help="folder of <task>_{pool,test}.jsonl")
    parser.add_argument("--out", default="bench/results/icl.jsonl")
    parser.add_argument("--smoke", action="store_true", help="intent, 10 queries, random vs knn")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.methods, args.k, args.n_test = ["intent"], ["random", "knn"], [4], 10
        args.out = str(Path(args.out).with_name("icl_smoke.jsonl"))
        Path(args.out).unlink(missing_ok=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    print(table(run(args)))


if __name__ == "__main__":
    main()
