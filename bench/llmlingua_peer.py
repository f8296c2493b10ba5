"""The peer, llmlingua==0.2.2, as a worker in its own venv (bench/.venv-llmlingua).

Run by bench/compression.py, never imported by Thresher. ``--prepare`` writes a copy of the
converted SmolLM2 folder that transformers 4.46 reads correctly (rope_theta at the top level, a
tokenizer class it knows, tied embeddings) and checks its perplexity on a plain sentence.
Otherwise it reads one JSON item per stdin line and answers one JSON line each.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

SENTENCE = "The capital of France is Paris. It is a beautiful city with many museums and parks."


def prepare(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    config = json.loads((tmp / "config.json").read_text())
    rope = config.pop("rope_parameters", {}) or {}
    config["rope_theta"] = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    config["torch_dtype"] = config.pop("dtype", "float32")
    config["tie_word_embeddings"] = True
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tok = json.loads((tmp / "tokenizer_config.json").read_text())
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok.pop("backend", None)
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def perplexity(folder: Path) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.tie_weights()
    ids = tokenizer(SENTENCE, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    return math.exp(float(loss))


def serve(folder: Path, mode: str, rate: float, threads: int) -> None:
    import torch
    from llmlingua import PromptCompressor

    torch.set_num_threads(threads)
    compressor = PromptCompressor(model_name=str(folder), device_map="cpu")
    options = {}
    if mode == "longllmlingua":
        # The settings the LongLLMLingua README recommends.
        options = dict(
            rank_method="longllmlingua",
            condition_in_question="after_condition",
            reorder_context="sort",
            dynamic_context_compression_ratio=0.3,
            condition_compare=True,
            context_budget="+100",
        )
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        item = json.loads(line)
        start = time.perf_counter()
        out = compressor.compress_prompt(
            [item["context"]], question=item["question"], rate=rate, **options
        )
        seconds = time.perf_counter() - start
        print(json.dumps({"text": out["compressed_prompt"], "seconds": seconds}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--prepare-from", type=Path)
    parser.add_argument("--mode", choices=["llmlingua", "longllmlingua"], default="llmlingua")
    parser.add_argument("--rate", type=float, default=0.33)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.prepare_from:
        prepare(args.prepare_from, args.folder)
        ppl = perplexity(args.folder)
        print(f"perplexity on a plain sentence: {ppl:.1f} (the main venv gives 12.6)")
        if ppl > 60:
            sys.exit(f"perplexity {ppl:.0f} is far above ~17: the converted model is broken")
        return
    serve(args.folder, args.mode, args.rate, args.threads)


if __name__ == "__main__":
    main()
