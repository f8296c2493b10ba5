"""Orderers: the order demonstrations appear in, the last being nearest the query.

``entropy`` follows Lu et al. 2022, "Fantastically Ordered Prompts and Where to Find Them":
sample candidate orders, let the LM write an artificial probe set from the demonstrations,
predict a label for every probe under every order, and keep the order whose predictions are
most spread over the labels (the highest global entropy, GlobalE); mean per-probe entropy
(LocalE) breaks ties.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any, Protocol, runtime_checkable

import numpy as np

from thresher.core.errors import InputError
from thresher.core.scoring import TokenScorer
from thresher.prompting.assembly import Template, TemplateName, get_template
from thresher.prompting.result import Demonstration, RetrievalResult
from thresher.prompting.retrievers import query_seed


@runtime_checkable
class Orderer(Protocol):
    """Puts a retrieval result's demonstrations in prompt order."""

    name: str

    def order(self, result: RetrievalResult) -> RetrievalResult: ...


class SimilarityOrderer:
    """Ascending similarity: the most similar demonstration sits last, next to the query."""

    name = "similarity"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def order(self, result: RetrievalResult) -> RetrievalResult:
        ranked = sorted(result.demonstrations, key=lambda d: d.similarity)
        return result.reordered(ranked, self.name)


class ReverseOrderer(SimilarityOrderer):
    """Descending similarity: the most similar demonstration comes first."""

    name = "reverse"

    def order(self, result: RetrievalResult) -> RetrievalResult:
        ranked = sorted(result.demonstrations, key=lambda d: -d.similarity)
        return result.reordered(ranked, self.name)


class RandomOrderer(SimilarityOrderer):
    """A shuffle seeded by (seed, query): repeatable across processes."""

    name = "random"

    def order(self, result: RetrievalResult) -> RetrievalResult:
        perm = query_seed(self.seed, result.query).permutation(len(result.demonstrations))
        return result.reordered([result.demonstrations[i] for i in perm], self.name)


class EntropyOrderer:
    """GlobalE ordering (Lu et al. 2022) probed with a small causal LM.

    Args:
        scorer: the TokenScorer that writes the probe set and scores labels.
        labels: the label set; by default the labels of the demonstrations.
        n_orders: candidate orders probed (all of them when k! is smaller).
        n_probe: probe inputs sampled from the LM.
        probes: probe inputs to use instead of sampling.
        template: how demonstrations and probes are written.
        max_probe_tokens: length cap of a sampled probe.
    """

    name = "entropy"
    needs_scorer = True

    def __init__(
        self,
        *,
        scorer: TokenScorer | None = None,
        labels: list[str] | None = None,
        n_orders: int = 8,
        n_probe: int = 8,
        probes: list[str] | None = None,
        template: TemplateName | Template = "classification",
        max_probe_tokens: int = 32,
        seed: int = 0,
    ) -> None:
        if scorer is None:
            raise InputError("The entropy orderer needs a TokenScorer (scorer=...).", field="order")
        if n_orders < 1 or n_probe < 1:
            raise InputError("n_orders and n_probe must be at least 1.", field="n_orders")
        self.scorer = scorer
        self.labels = labels
        self.n_orders = n_orders
        self.n_probe = n_probe
        self.probes = probes
        self.template = template
        self.max_probe_tokens = max_probe_tokens
        self.seed = seed

    def candidate_orders(self, k: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
        if math.factorial(k) <= self.n_orders:
            return list(itertools.permutations(range(k)))
        orders = {tuple(range(k))}
        while len(orders) < self.n_orders:
            orders.add(tuple(int(i) for i in rng.permutation(k)))
        return sorted(orders)

    def order(self, result: RetrievalResult) -> RetrievalResult:
        demos = result.demonstrations
        labels = self.labels or sorted({d.label for d in demos if d.label is not None})
        if len(demos) < 2 or len(labels) < 2:
            # One demonstration has one order; one label has zero entropy under every order.
            result = result.reordered(list(demos), self.name)
            result.info["entropy"] = {"probed": 0}
            return result
        tpl = get_template(self.template)
        rng = query_seed(self.seed, result.query)
        orders = self.candidate_orders(len(demos), rng)
        probes = self.probes or self.sample_probes(demos, tpl)
        prefixes, conts = [], []
        for perm in orders:
            for probe in probes:
                prefix = tpl.prompt(probe, [demos[i] for i in perm])
                for label in labels:
                    prefixes.append(prefix)
                    conts.append(" " + label)
        logps = self.scorer.continuation_logprobs(prefixes, conts)
        scores = np.array([float(lp.sum()) for lp in logps]).reshape(
            len(orders), len(probes), len(labels)
        )
        global_e = np.array([_entropy(Counter(np.argmax(s, axis=1)), len(probes)) for s in scores])
        local_e = np.array([_local_entropy(s) for s in scores])
        best = max(range(len(orders)), key=lambda i: (round(global_e[i], 9), local_e[i]))
        ordered = [demos[i] for i in orders[best]]
        out = result.reordered(ordered, self.name)
        out.info["entropy"] = {
            "probed": len(orders),
            "probes": probes,
            "global_entropy": float(global_e[best]),
            "global_entropies": [float(g) for g in global_e],
            "local_entropy": float(local_e[best]),
        }
        return out

    def sample_probes(self, demos: list[Demonstration], tpl: Template) -> list[str]:
        """Probe inputs the LM writes after all demonstrations, as in Lu et al. 2022."""
        import torch

        context = tpl.separator.join(tpl.render_demo(d) for d in demos)
        context += tpl.separator + tpl.input_prefix
        ids = torch.tensor([[self.scorer.start_id, *self.scorer.encode(context)]])
        ids = ids.to(self.scorer.device)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(self.seed)
            out = self.scorer.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_p=0.95,
                max_new_tokens=self.max_probe_tokens,
                num_return_sequences=self.n_probe,
                pad_token_id=self.scorer.pad_id,
            )
        probes = []
        for row in out[:, ids.shape[1] :]:
            text = self.scorer.decode(row.tolist()).split("\n")[0].strip()
            probes.append(text or demos[len(probes) % len(demos)].text)
        return probes


def _entropy(counts: Counter[Any], total: int) -> float:
    p = np.array(list(counts.values()), dtype=np.float64) / total
    return float(-(p * np.log(p)).sum())


def _local_entropy(scores: np.ndarray) -> float:
    """Mean entropy of the per-probe label distributions (softmax over label log-probs)."""
    z = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return float(-(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1).mean())
