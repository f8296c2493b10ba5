"""Audit mode: what compression would save on this traffic, and whether answers would change.

A route in audit mode (``audit_sample`` for every route, ``audit_routes`` per route) is
forwarded unchanged, as without Thresher. For a sampled share of its requests, once the client
has its answer, a background task computes what the pipeline would have forwarded (at one of
``audit_rates``, in turn) and, within ``audit_send_per_minute``, sends that to the same backend.
It records per tenant, route, method and rate: prompt tokens before and after, the two answers'
output tokens, their price (api/pricing.py) and whether they agree (:func:`agreement`). Nothing
here is awaited by a client: a sample that finds the queue full is dropped and counted.

The paired output lengths also teach the pays gate (api/pays.py) how this route's answers grow
when its prompts are cut.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import random
import re
import time
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from thresher.api.pipeline import Kind, Pipeline, RequestContext, ThresherOptions, deep_merge

if TYPE_CHECKING:
    from thresher.api.state import AppState

log = logging.getLogger(__name__)
_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")
JUDGE_PROMPT = (
    "You compare two answers to the same request. Reply with one word: SAME if they give the "
    "same facts and the same conclusion (wording aside), DIFFERENT otherwise."
)


@dataclass(slots=True)
class AuditJob:
    """One sampled request, once its client has the answer."""

    tenant: str
    kind: Kind
    route: str
    body: dict[str, Any]
    options: ThresherOptions
    rate: float
    answer: dict[str, Any]


@dataclass
class Totals:
    """Sums over the samples of one tenant, route, method and rate."""

    samples: int = 0
    sent: int = 0
    tokens_before: int = 0
    tokens_after: int = 0
    sent_input_saved: int = 0  # prompt tokens the sent samples saved (the backend's count)
    output_original: int = 0
    output_compressed: int = 0
    judged: int = 0
    agreed: int = 0
    similarity_sum: float = 0.0
    similarity_n: int = 0
    priced: int = 0
    cost_original_usd: float = 0.0
    cost_compressed_usd: float = 0.0
    input_saved_usd: float = 0.0  # every sample's input saving, sent or not

    def add(self, other: Totals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def answer_text(kind: Kind, answer: dict[str, Any]) -> str:
    """The first choice's text of a chat or completion answer ("" when there is none)."""
    choices = answer.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    if kind == "chat":
        message = first.get("message") or {}
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""
    text = first.get("text")
    return text if isinstance(text, str) else ""


def normalise(text: str) -> str:
    """Case, runs of spaces and leading/trailing punctuation aside (``"Paris."`` == ``"paris"``)."""
    return _PUNCT.sub("", " ".join(text.lower().split()))


def agreement(
    a: str, b: str, *, short_words: int, similarity: float, embed: Any = None
) -> tuple[bool | None, float | None, str]:
    """Whether two answers agree: ``(agreed, cosine similarity, how)``.

    Short answers (both at most ``short_words`` words) agree only when equal after
    :func:`normalise` (a yes and a no are close in embedding space); longer ones when the cosine
    similarity of their embeddings (``embed``: texts -> L2-normalised rows) is at least
    ``similarity``. Without ``embed`` a long pair is not judged here (None).
    """
    if max(len(a.split()), len(b.split())) <= short_words:
        return normalise(a) == normalise(b), None, "exact"
    if embed is None:
        return None, None, "none"
    vectors = embed([a, b])
    cosine = float(vectors[0] @ vectors[1])
    return cosine >= similarity, cosine, "embedding"


def judged(reply: str) -> bool | None:
    """A judge's one-word reply: SAME -> True, DIFFERENT -> False, anything else None."""
    word = normalise(reply).split(" ")[0] if reply.strip() else ""
    return {"same": True, "different": False}.get(word)


@dataclass
class AuditLedger:
    """What the audit found, per tenant, in this process."""

    by_tenant: dict[str, dict[tuple[str, str, float], Totals]] = field(default_factory=dict)

    def record(self, tenant: str, route: str, method: str, rate: float, totals: Totals) -> None:
        rows = self.by_tenant.setdefault(tenant, {})
        rows.setdefault((route, method, rate), Totals()).add(totals)

    def report(self, tenant: str, min_agreement: float) -> list[dict[str, Any]]:
        """One row per route, method and rate, with what follows from the sums."""
        out = []
        for (route, method, rate), t in sorted(self.by_tenant.get(tenant, {}).items()):
            saved = t.tokens_before - t.tokens_after
            sent_before = t.output_original
            change = (t.output_compressed - sent_before) / sent_before if sent_before else None
            agreement_share = t.agreed / t.judged if t.judged else None
            saved_usd = t.cost_original_usd - t.cost_compressed_usd if t.priced else None
            # What the sent samples saved in all: prompt tokens cut less output tokens added.
            net_tokens = None
            if t.sent:
                net_tokens = t.sent_input_saved - (t.output_compressed - t.output_original)
            net = saved_usd if saved_usd is not None else net_tokens
            paid = (
                net is not None and net > 0
                and agreement_share is not None and agreement_share >= min_agreement
            )  # fmt: skip
            out.append({
                "route": route, "method": method, "rate": rate, "samples": t.samples,
                "sent": t.sent, "tokens_before": t.tokens_before, "tokens_after": t.tokens_after,
                "saved_tokens": saved,
                "saved_share": saved / t.tokens_before if t.tokens_before else 0.0,
                "output_tokens_original": t.output_original,
                "output_tokens_compressed": t.output_compressed,
                "output_change": change, "judged": t.judged, "agreed": t.agreed,
                "agreement": agreement_share,
                "mean_similarity": t.similarity_sum / t.similarity_n if t.similarity_n else None,
                "net_saved_tokens": net_tokens,
                "input_saved_usd": t.input_saved_usd if t.priced or t.input_saved_usd else None,
                "cost_original_usd": t.cost_original_usd if t.priced else None,
                "cost_compressed_usd": t.cost_compressed_usd if t.priced else None,
                "saved_usd": saved_usd, "paid": paid,
            })  # fmt: skip
        return out


class Auditor:
    """Samples audited routes' requests and audits them off the request path.

    Args:
        settings: The service settings (``audit_*``).
        store: Where the per-minute send budget is counted (shared by replicas with Redis).
    """

    def __init__(self, settings: Any, store: Any) -> None:
        self.settings = settings
        self.store = store
        self.ledger = AuditLedger()
        self.routes = dict(settings.audit_routes)
        self.default = settings.audit_sample
        self.rates = [float(r) for r in settings.audit_rates]
        self._turns: dict[str, itertools.cycle[float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Any, store: Any) -> Auditor | None:
        """An auditor when some route is in audit mode, else None (audit mode costs nothing)."""
        if settings.audit_sample <= 0 and not any(v > 0 for v in settings.audit_routes.values()):
            return None
        return cls(settings, store)

    def covers(self, route: str) -> bool:
        """Whether ``route`` is in audit mode (its requests go to the backend unchanged)."""
        return self.routes.get(route, self.default) > 0

    def sample(self, route: str) -> float | None:
        """The rate to audit this request at, or None when it is not sampled."""
        share = self.routes.get(route, self.default)
        if share <= 0 or random.random() >= share:
            return None
        turn = self._turns.get(route)
        if turn is None:
            turn = self._turns[route] = itertools.cycle(self.rates)
        return next(turn)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def submit(self, job: AuditJob, state: AppState) -> bool:
        """Start auditing ``job`` in the background; False (and counted) when the queue is full."""
        metrics = state.metrics
        if len(self._tasks) >= self.settings.audit_queue:
            if metrics is not None:
                metrics.observe_audit(job.route, "-", job.rate, "dropped")
            return False
        task = asyncio.get_running_loop().create_task(self.run(job, state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait for the audits in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def _budget(self) -> bool:
        """Whether one more compressed request may be sent this minute."""
        limit = self.settings.audit_send_per_minute
        if limit <= 0:
            return False
        minute = int(time.time() // 60)
        return self.store.incr("audit", f"sent:{minute}", 1, ttl_s=120) <= limit

    def _options(self, job: AuditJob) -> tuple[ThresherOptions, str]:
        base = job.options.compression
        chosen = base.model_dump(exclude_unset=True) if base is not None else {}
        chosen = deep_merge(chosen, dict(self.settings.audit_compression))
        chosen.pop("target_tokens", None)
        chosen.update(rate=job.rate, when="always")
        options = job.options.model_dump(exclude_unset=True)
        options["compression"] = chosen
        built = ThresherOptions.model_validate(options)
        assert built.compression is not None
        return built, built.compression.method

    def _compress(self, job: AuditJob, state: AppState) -> tuple[dict[str, Any], Any, str]:
        """What the pipeline would have forwarded (runs in a worker thread)."""
        assert state.router is not None and state.stages is not None
        assert state.services is not None
        route = state.router.resolve(job.route)
        options, method = self._options(job)
        ctx = RequestContext(
            job.kind, copy.deepcopy(job.body), options, state.prompt_counter(route.tokenizer),
            route=job.route,
        )  # fmt: skip
        report = Pipeline(state.stages.build(options, state.services)).run(ctx)
        return ctx.body, report, method

    async def run(self, job: AuditJob, state: AppState) -> None:
        """Audit one sampled request; a failure is logged and counted, never raised."""
        method = "-"
        try:
            method = await self._run(job, state)
        except Exception:  # noqa: BLE001 - an audit never disturbs the service
            log.exception("audit of a %s request failed", job.route)
            if state.metrics is not None:
                state.metrics.observe_audit(job.route, method, job.rate, "failed")

    async def _run(self, job: AuditJob, state: AppState) -> str:
        assert state.router is not None and state.metrics is not None
        body, report, method = await asyncio.to_thread(self._compress, job, state)
        metrics, route = state.metrics, state.router.resolve(job.route)
        names = (job.route, route.upstream_model)
        if report.failed or report.saved <= 0:
            metrics.observe_audit(job.route, method, job.rate, "not_compressed")
            return method
        totals = Totals(samples=1, tokens_before=report.tokens_before,
                        tokens_after=report.tokens_after)  # fmt: skip
        prices = state.prices
        if prices is not None:
            saved_in = prices.cost(names, report.tokens_before)
            after_in = prices.cost(names, report.tokens_after)
            if saved_in is not None and after_in is not None:
                totals.input_saved_usd = saved_in - after_in
        outcome = "compute_only"
        if self._budget():
            out = {**body, "model": route.upstream_model, "stream": False}
            out.pop("stream_options", None)
            shadow = await (route.backend.chat if job.kind == "chat" else route.backend.complete)(
                out
            )
            outcome = await self._compare(job, state, shadow, totals, names)
        self.ledger.record(job.tenant, job.route, method, job.rate, totals)
        metrics.observe_audit(job.route, method, job.rate, outcome, totals)
        return method

    async def _compare(
        self, job: AuditJob, state: AppState, shadow: dict[str, Any], totals: Totals,
        names: tuple[str, ...],
    ) -> str:  # fmt: skip
        """Fill in the pair's output lengths, prices and agreement; the sample's outcome."""
        counter = state.prompt_counter(state.router.resolve(job.route).tokenizer)  # type: ignore[union-attr]
        a, b = answer_text(job.kind, job.answer), answer_text(job.kind, shadow)
        ua, ub = _usage(job.answer), _usage(shadow)
        if ua.get("completion_tokens") is not None and ub.get("completion_tokens") is not None:
            out_a, out_b = int(ua["completion_tokens"]), int(ub["completion_tokens"])
        else:
            out_a, out_b = counter.count(a), counter.count(b)
        totals.sent = 1
        totals.output_original, totals.output_compressed = out_a, out_b
        if state.compression is not None:
            kept = totals.tokens_after / max(totals.tokens_before, 1)
            state.compression.gate.output.observe_pair(job.route, kept, out_a, out_b)
        in_a = int(ua.get("prompt_tokens") or totals.tokens_before)
        in_b = int(ub.get("prompt_tokens") or totals.tokens_after)
        totals.sent_input_saved = in_a - in_b
        prices = state.prices
        if prices is not None:
            cost_a = prices.cost(names, in_a, out_a, _cached(ua))
            cost_b = prices.cost(names, in_b, out_b, _cached(ub))
            if cost_a is not None and cost_b is not None:
                totals.priced = 1
                totals.cost_original_usd, totals.cost_compressed_usd = cost_a, cost_b
        agreed, cosine, how = await self._agree(state, a, b)
        if cosine is not None:
            totals.similarity_sum, totals.similarity_n = cosine, 1
        if agreed is None:
            return "unjudged"
        totals.judged = 1
        totals.agreed = int(agreed)
        return f"agreed_{how}" if agreed else f"disagreed_{how}"

    async def _agree(
        self, state: AppState, a: str, b: str
    ) -> tuple[bool | None, float | None, str]:
        settings = self.settings
        long = max(len(a.split()), len(b.split())) > settings.audit_short_words
        if long and settings.audit_judge_route:
            assert state.router is not None
            judge = state.router.resolve(settings.audit_judge_route)
            reply = await judge.backend.chat({
                "model": judge.upstream_model, "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "system", "content": JUDGE_PROMPT},
                             {"role": "user", "content": f"Answer A:\n{a}\n\nAnswer B:\n{b}"}],
            })  # fmt: skip
            return judged(answer_text("chat", reply)), None, "judge"
        provider, name = state.provider, settings.embedder_model

        def embed(texts: list[str]) -> Any:
            return provider.embedder(name).encode(texts)

        return await asyncio.to_thread(
            agreement, a, b, short_words=settings.audit_short_words,
            similarity=settings.audit_similarity, embed=embed,
        )  # fmt: skip

    def report(self, tenant: str) -> dict[str, Any]:
        """``GET /v1/audit``: the rows of ``tenant`` and, per route and method, the rate that
        saved the most among those that paid."""
        rows = self.ledger.report(tenant, self.settings.audit_min_agreement)
        best: dict[str, dict[str, Any]] = {}
        for row in rows:
            key = f"{row['route']}/{row['method']}"
            net = row["saved_usd"] if row["saved_usd"] is not None else row["net_saved_tokens"]
            if row["paid"] and (key not in best or net > best[key]["net"]):
                best[key] = {"rate": row["rate"], "net": net}
        return {
            "rows": rows,
            "paid_at": {k: v["rate"] for k, v in best.items()},
            "pending": self.pending,
        }


def _usage(answer: dict[str, Any]) -> dict[str, Any]:
    usage = answer.get("usage")
    return usage if isinstance(usage, dict) else {}


def _cached(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) else 0
