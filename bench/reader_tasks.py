"""Reader tasks for bench/compression.py: can a small reader still answer from compressed text?

    python bench/reader_tasks.py 60     # where each llmlingua2 ranker puts the planted sentence

Needles: one fact sentence planted at a random depth of a mystery story from longqa.jsonl (a
source the llmlingua2 classifier never saw in training), asked about; half the answers are
numbers (which every method protects), half are words (which only readable output keeps).
The reader is SmolLM2-135M-Instruct through Thresher's LocalBackend, greedy, and an answer is
right when it contains the planted value.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

PLACES = ["stable", "boathouse", "cellar", "attic", "chapel", "garage", "orchard", "workshop"]
NAMES = ["Marta", "Osric", "Delphine", "Tobias", "Ingrid", "Rufus", "Perpetua", "Lionel"]
COLOURS = ["green", "purple", "orange", "yellow", "silver", "crimson"]
PETS = ["parrot", "tortoise", "ferret", "goldfish", "hamster", "rabbit"]


def make_fact(rng: random.Random) -> tuple[str, str, str, str]:
    """A (sentence, question, answer, paraphrased question) fact, numeric or verbal; the
    paraphrase shares few words with the sentence (a test of the ranker, not of the reader)."""
    kind = rng.randrange(4)
    place, name = rng.choice(PLACES), rng.choice(NAMES)
    if kind == 0:
        code = str(rng.randrange(1000, 10000))
        return (
            f"The code for the {place} is {code}.",
            f"What is the code for the {place}?",
            code,
            f"Which number do I need to get into the {place}?",
        )
    if kind == 1:
        room = str(rng.randrange(10, 100))
        return (
            f"{name} keeps the spare key in locker {room}.",
            f"In which locker does {name} keep the spare key?",
            room,
            f"Where is {name}'s extra key stored?",
        )
    if kind == 2:
        colour = rng.choice(COLOURS)
        return (
            f"The door of the {place} was painted {colour} last spring.",
            f"What colour was the door of the {place} painted?",
            colour,
            f"What shade is the entrance of the {place}?",
        )
    pet = rng.choice(PETS)
    return (
        f"{name} owns a pet {pet} called Biscuit.",
        f"What kind of pet does {name} own?",
        pet,
        f"Which animal lives with {name}?",
    )


def needles(stories: list[dict], n: int, seed: int = 14, chars: int = 5000) -> list[dict]:
    """``n`` needle items, each a fact planted at a sentence end of a story cut to ``chars``."""
    rng = random.Random(seed)
    contexts = sorted({s["context"] for s in stories if len(s["context"]) >= chars // 2})
    rng.shuffle(contexts)
    out = []
    for i in range(n):
        host = contexts[i % len(contexts)][:chars]
        host = host[: host.rfind(". ") + 1] if ". " in host else host
        ends = [k + 2 for k in range(len(host) - 1) if host.startswith(". ", k)]
        cut = rng.choice(ends) if ends else len(host)
        sentence, question, answer, paraphrase = make_fact(rng)
        out.append(
            {
                "id": f"needle-{i}",
                "context": host[:cut] + sentence + " " + host[cut:],
                "question": question,
                "answer": answer,
                "fact": sentence,
                "paraphrase": paraphrase,
            }
        )
    return out


class Reader:
    """SmolLM2 answering from a prompt, greedily, in a few words; in the dtype this CPU runs
    fastest unless one is given (bf16 where native, as the earlier results were read)."""

    def __init__(self, provider: Any, dtype: str | None = None, max_new_tokens: int = 12) -> None:
        from thresher.core.backends import LocalBackend

        lm = provider.causal_lm(dtype=dtype or provider.compression_dtype())
        self.backend = LocalBackend(lm, max_new_tokens=max_new_tokens)

    def answer(self, prompt: str) -> str:
        body = {
            "messages": [{"role": "user", "content": prompt + "\nAnswer in a few words."}],
            "temperature": 0,
        }
        out = asyncio.run(self.backend.chat(body))
        return str(out["choices"][0]["message"]["content"])

    def correct(self, prompt: str, answer: str) -> bool:
        return answer.lower() in self.answer(prompt).lower()


def rank_study(n: int = 100, dtype: str = "bfloat16") -> dict[str, dict[str, float]]:
    """Where each ranker puts the planted sentence among a needle item's sentences: recall at
    1 and 3 and the mean rank, for ``llmlingua2``'s rankers: ``embedder`` as it runs (``one
    pass``: sentence vectors pooled from the classifier's pass), the same embedder on each
    sentence alone, and ``lexical``."""
    import json

    import numpy as np
    from embedcache import shared_data

    from thresher.compression.llmlingua2 import lexical_similarity, sentence_vectors
    from thresher.compression.units import ProtectOptions, split_units, unit_of_chars
    from thresher.core.models import ModelProvider
    from thresher.core.text import sentence_groups

    rows = [json.loads(line) for line in (shared_data() / "longqa.jsonl").open()]
    provider = ModelProvider(device="cpu")
    embedder = provider.embedder(dtype=dtype)
    classifier = provider.token_classifier(dtype=dtype)
    ranks: dict[str, list[int]] = {}
    for item in needles(rows, n):
        units = split_units(item["context"], ProtectOptions())
        groups = sentence_groups(units.pieces)
        texts = [
            "".join(p for p, g in zip(units.pieces, groups, strict=True) if g == s).strip()
            for s in range(int(groups.max()) + 1)
        ]
        (tokens,) = classifier.keep_probs([units.text], embedder=embedder)
        where = np.asarray(unit_of_chars(units, tokens.offsets), dtype=np.int64)
        pooled = sentence_vectors(tokens.vectors, groups[where])
        live = [s for s, t in enumerate(texts) if t]
        texts = [texts[s] for s in live]
        gold = next(i for i, t in enumerate(texts) if item["fact"] in t)
        for kind in ("question", "paraphrase"):
            vectors = embedder.encode([item[kind], *texts], batch_size=16)
            sims = {
                "embedder (one pass)": pooled[live] @ vectors[0],
                "embedder (each sentence alone)": vectors[1:] @ vectors[0],
                "lexical": lexical_similarity(item[kind], texts),
            }
            for name, s in sims.items():
                rank = int((np.asarray(s) > s[gold]).sum()) + 1
                ranks.setdefault(f"{name}, {kind}", []).append(rank)
    return {
        name: {
            "recall@1": float(np.mean(np.array(r) == 1)),
            "recall@3": float(np.mean(np.array(r) <= 3)),
            "mean_rank": float(np.mean(r)),
            "items": len(r),
        }
        for name, r in ranks.items()
    }


if __name__ == "__main__":  # python bench/reader_tasks.py 60: the ranker study
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, not this dir

    print(rank_study(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
