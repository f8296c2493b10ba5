"""Train Thresher's embedded LLMLingua-2 classifier (see MODEL_CARD.md beside this file).

Teacher: SmolLM2-135M-Instruct's self-information per word (Selective Context's signal, the
causal-LM methods' score). A word is labelled *keep* (1) when its self-information is in the top
``KEEP`` fraction of its document, and protected spans (numbers, dates, URLs) are always kept.
Student: all-MiniLM-L6-v2 with its lower five layers frozen; the sixth layer and a two-label head
are trained on the teacher's labels, and only those parameters ship (fp16).

    # teacher labels (cached), then training:
    nice -n 10 python -m thresher.compression.train.llmlingua2 --data DIR
    # the shipped classifier's held-out AUC and time by window:
    python -m thresher.compression.train.llmlingua2 --data DIR --eval-windows 512 256 128

``--data`` is the folder of Thresher's test and benchmark data set (not part of the repository
or the wheel; MODEL_CARD.md says what it holds and where it was cut from). Training sources:
raw_pool.jsonl (news, Austen, Reuters, speeches, reviews, fortunes) and instructions.jsonl. Held
out: longqa.jsonl (the mystery stories, where the reader bench and the needle tasks run), scored
for the card against the teacher's labels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from thresher.compression.units import ProtectOptions, split_units, unit_of_chars
from thresher.core.catalog import CLASSIFIER_WEIGHTS, embedder_path
from thresher.core.models import ModelProvider

SEED = 14
KEEP = 0.5  # fraction of words the teacher keeps
TRAIN_SOURCES = ("lee_background", "austen", "reuters", "political", "amazon", "fortune")
PER_SOURCE = 55
INSTRUCTIONS = 70
HELD_OUT = 24
TRAINED_LAYERS = 1  # top encoder layers trained (the rest frozen and shared with the embedder)
EPOCHS = 6


DATA_FILES = ("raw_pool.jsonl", "instructions.jsonl", "longqa.jsonl")


def load_texts(data: Path) -> tuple[list[str], list[str]]:
    rng = random.Random(SEED)
    by_source: dict[str, list[str]] = {}
    for line in (data / "raw_pool.jsonl").open():
        row = json.loads(line)
        if row["source"] in TRAIN_SOURCES and 500 <= len(row["text"]) <= 3500:
            by_source.setdefault(row["source"], []).append(row["text"])
    train = []
    for source in TRAIN_SOURCES:
        texts = by_source.get(source, [])
        rng.shuffle(texts)
        train += texts[:PER_SOURCE]
    rows = [json.loads(line) for line in (data / "instructions.jsonl").open()]
    rng.shuffle(rows)
    for row in rows:
        text = "\n".join(str(row.get(k) or "") for k in ("instruction", "input", "output")).strip()
        if 600 <= len(text) <= 3500:
            train.append(text)
        if len(train) >= PER_SOURCE * len(TRAIN_SOURCES) + INSTRUCTIONS:
            break
    stories = [json.loads(line)["context"] for line in (data / "longqa.jsonl").open()]
    held = sorted(set(stories))
    rng.shuffle(held)
    return train, [s[:4000] for s in held[:HELD_OUT]]


def teacher_labels(texts: list[str], cache: Path) -> list[dict]:
    """Per text: unit starts and keep labels from SmolLM2's self-information (cached)."""
    key = hashlib.sha1(json.dumps([texts, KEEP]).encode()).hexdigest()[:12]
    path = cache / f"labels-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    provider = ModelProvider(device="cpu")
    scorer = provider.scorer(dtype="bfloat16")
    protect = ProtectOptions()
    out = []
    start = time.perf_counter()
    units_all, ids_all, tok_unit_all = [], [], []
    for text in texts:
        units = split_units(text, protect)
        ids, offsets = scorer.encode_with_offsets(text)
        units_all.append(units)
        ids_all.append(ids)
        tok_unit_all.append(np.asarray(unit_of_chars(units, offsets), dtype=np.int64))
    for b in range(0, len(texts), 16):
        logprobs = scorer.logprobs_ids(ids_all[b : b + 16])
        for k, lp in enumerate(logprobs):
            i = b + k
            units, tok_unit = units_all[i], tok_unit_all[i]
            info = np.bincount(tok_unit, weights=-lp, minlength=len(units))
            word = np.array([p.strip() != "" for p in units.pieces])
            forced = np.asarray(units.forced, dtype=bool)
            cut = np.quantile(info[word & ~forced], 1 - KEEP) if (word & ~forced).any() else 0
            keep = (info >= cut) & word | forced
            out.append({"starts": units.starts, "keep": keep.astype(int).tolist()})
        print(
            f"teacher {min(b + 16, len(texts))}/{len(texts)} {time.perf_counter() - start:.0f}s",
            file=sys.stderr,
            flush=True,
        )
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def token_examples(tokenizer, texts, labels, max_len=510):
    """Student windows: token ids and per-token labels (-100 for whitespace-only units)."""
    import bisect

    examples = []
    for text, lab in zip(texts, labels, strict=True):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        y = [
            int(lab["keep"][max(0, bisect.bisect_right(lab["starts"], a) - 1)])
            for a, _ in enc["offset_mapping"]
        ]
        for s in range(0, len(ids), max_len):
            examples.append((ids[s : s + max_len], y[s : s + max_len]))
    return examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, required=True,
        help="folder with raw_pool.jsonl, instructions.jsonl and longqa.jsonl",
    )  # fmt: skip
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/thresher/llmlingua2")
    parser.add_argument("--out", type=Path, default=CLASSIFIER_WEIGHTS)
    # One thread: on a shared machine two torch threads spin against other work (several x slower).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--eval-windows", type=int, nargs="+",
        help="train nothing: the shipped classifier's held-out AUC and time at these windows",
    )  # fmt: skip
    args = parser.parse_args()
    missing = [name for name in DATA_FILES if not (args.data / name).is_file()]
    if missing:
        parser.error(f"--data {args.data} lacks {', '.join(missing)}; give the data folder.")
    if args.eval_windows:
        eval_windows(args.eval_windows, args.data, args.cache, args.threads)
        return
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train_texts, held_texts = load_texts(args.data)
    labels = teacher_labels(train_texts + held_texts, args.cache)
    t_teacher = time.perf_counter() - t0
    base = embedder_path("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForTokenClassification.from_pretrained(
        base, num_labels=2, id2label={0: "drop", 1: "keep"}, label2id={"drop": 0, "keep": 1}
    )
    n_layers = model.config.num_hidden_layers
    first_trained = n_layers - TRAINED_LAYERS
    train = token_examples(tokenizer, train_texts, labels[: len(train_texts)])
    held = token_examples(tokenizer, held_texts, labels[len(train_texts) :])
    bert = model.bert
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id

    def frozen_states(examples):
        """Hidden states entering the first trained layer (no grad, computed once)."""
        out = []
        with torch.no_grad():  # not inference_mode: these tensors feed autograd later
            for ids, y in examples:
                x = torch.tensor([[cls_id, *ids, sep_id]])
                h = bert(input_ids=x, output_hidden_states=True).hidden_states[first_trained]
                out.append((h[0].clone(), torch.tensor([-100, *y, -100])))
        return out

    train_h, held_h = frozen_states(train), frozen_states(held)
    print(
        f"{len(train_h)} train / {len(held_h)} held-out windows; frozen pass "
        f"{time.perf_counter() - t0 - t_teacher:.0f}s",
        file=sys.stderr,
        flush=True,
    )
    for p in model.parameters():
        p.requires_grad = False
    top = [bert.encoder.layer[i] for i in range(first_trained, n_layers)]
    params = [p for layer in top for p in layer.parameters()] + list(model.classifier.parameters())
    for p in params:
        p.requires_grad = True
    opt = torch.optim.AdamW(
        [
            {"params": [p for layer in top for p in layer.parameters()], "lr": 1e-4},
            {"params": list(model.classifier.parameters()), "lr": 2e-3},
        ],
        weight_decay=0.01,
    )
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)

    def forward(h):
        for layer in top:
            out = layer(h[None])
            h = (out[0] if isinstance(out, tuple) else out)[0]
        return model.classifier(h)

    rng = random.Random(SEED)
    for epoch in range(EPOCHS):
        model.train()
        order = list(range(len(train_h)))
        rng.shuffle(order)
        total = 0.0
        for step, i in enumerate(order):
            h, y = train_h[i]
            loss = loss_fn(forward(h), y)
            loss.backward()
            if step % 4 == 3:
                opt.step()
                opt.zero_grad()
            total += float(loss.detach())
        model.eval()
        print(
            f"epoch {epoch + 1}: train loss {total / len(order):.4f}; held-out "
            f"{evaluate(forward, held_h)}; {time.perf_counter() - t0:.0f}s",
            file=sys.stderr,
            flush=True,
        )
    figures = evaluate(forward, held_h)
    state = {}
    for i in range(first_trained, n_layers):
        for k, v in bert.encoder.layer[i].state_dict().items():
            state[f"bert.encoder.layer.{i}.{k}"] = v.detach().half().contiguous()
    for k, v in model.classifier.state_dict().items():
        state[f"classifier.{k}"] = v.detach().half().contiguous()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "base": "all-MiniLM-L6-v2",
        "labels": "0 = drop, 1 = keep",
        "trained_layers": str(TRAINED_LAYERS),
        "seed": str(SEED),
        "teacher": f"SmolLM2-135M-Instruct self-information, top {KEEP:.0%} words kept",
        "train_texts": str(len(train_texts)),
        "held_out": json.dumps(figures),
        "seconds": f"{time.perf_counter() - t0:.0f}",
    }
    save_file(state, str(args.out), metadata=meta)
    print(json.dumps(meta, indent=1))


def eval_windows(windows: list[int], data: Path, cache: Path, threads: int) -> None:
    """AUC of the shipped classifier's keep probabilities against the teacher on the held-out
    stories, and its time, for each window length (tokens per forward window)."""
    import bisect
    import copy

    import torch

    torch.set_num_threads(threads)
    _, held = load_texts(data)
    labels = teacher_labels(held, cache)
    shipped = ModelProvider(device="cpu").token_classifier(dtype="bfloat16")
    for window in windows:
        classifier = copy.copy(shipped)
        classifier.max_length = window
        start = time.process_time()
        probs = classifier.keep_probs(held)
        seconds = time.process_time() - start
        p = np.concatenate([t.keep for t in probs])
        y = np.array([
            lab["keep"][max(0, bisect.bisect_right(lab["starts"], a) - 1)]
            for t, lab in zip(probs, labels, strict=True) for a, _ in t.offsets
        ])  # fmt: skip
        ranks = np.argsort(np.argsort(p))
        pos = y == 1
        auc = (ranks[pos].mean() - (pos.sum() - 1) / 2) / max((~pos).sum(), 1)
        print(f"window {window:4d}: AUC {auc:.4f}, {seconds:.2f} CPU-s for {len(p)} tokens")


def evaluate(forward, examples) -> dict[str, float]:
    """Token accuracy and keep-F1 against the teacher, and the student's AUC."""
    import torch

    ps, ys = [], []
    with torch.inference_mode():
        for h, y in examples:
            p = torch.softmax(forward(h).float(), -1)[:, 1]
            m = y != -100
            ps.append(p[m].numpy())
            ys.append(y[m].numpy())
    p, y = np.concatenate(ps), np.concatenate(ys)
    pred = p >= np.quantile(p, 1 - y.mean())  # same keep rate as the teacher
    tp = float((pred & (y == 1)).sum())
    f1 = 2 * tp / max(pred.sum() + (y == 1).sum(), 1)
    ranks = np.argsort(np.argsort(p))
    pos = y == 1
    auc = (ranks[pos].mean() - (pos.sum() - 1) / 2) / max((~pos).sum(), 1)
    return {
        "accuracy": round(float((pred == (y == 1)).mean()), 4),
        "keep_f1": round(f1, 4),
        "auc": round(float(auc), 4),
    }


if __name__ == "__main__":
    main()
