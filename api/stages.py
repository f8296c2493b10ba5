"""The stages of the request pipeline, in order: demonstrations (retrieve + order), the shared
token budget, compression. Each is built per request from the merged ``thresher`` options."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from api.pipeline import (
    CompressionOptions,
    DemonstrationOptions,
    RequestContext,
    Retrieved,
    StageRegistry,
    ThresherOptions,
)
from core.errors import InputError, NotFoundError
from core.record import message_text
from core.tokens import uncached


def query_text(ctx: RequestContext) -> str:
    """What demonstrations are retrieved for: the last user turn, or the completion prompt."""
    if ctx.kind == "chat":
        users = [m for m in ctx.body["messages"] if m.get("role") == "user"]
        return message_text(users[-1]) if users else ""
    prompt = ctx.body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


@dataclass
class LatencyModel:
    """Seconds per prompt token of each compression method, learned from the runs so far
    (an exponential moving average), so a stage can be skipped when it would not pay."""

    alpha: float = 0.3
    per_token: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def predict_ms(self, method: str, tokens: int) -> float | None:
        rate = self.per_token.get(method)
        return None if rate is None else rate * tokens * 1000

    def observe(self, method: str, tokens: int, seconds: float) -> None:
        if tokens <= 0:
            return
        with self._lock:
            old = self.per_token.get(method)
            new = seconds / tokens
            self.per_token[method] = new if old is None else old + self.alpha * (new - old)


class DemonstrationStage:
    """Retrieve ``k`` demonstrations from a pool and order them (prompting/)."""

    name = "demonstrations"

    def __init__(self, options: DemonstrationOptions, state: Any) -> None:
        self.options = options
        self.state = state

    def skip_reason(self, ctx: RequestContext) -> str | None:
        return None if query_text(ctx).strip() else "no user text to retrieve demonstrations for"

    def run(self, ctx: RequestContext) -> None:
        from api.routes.pools import install
        from prompting import demonstrate

        pools = install(self.state)
        pool = pools.get(self.options.pool)
        found = demonstrate(
            pool,
            query_text(ctx),
            min(self.options.k, len(pool)),
            method=self.options.method,
            order=self.options.order or "similarity",
            retriever=pools.retriever(self.options.pool, self.options.method),
            scorer=lambda: self.state.provider.scorer(self.state.settings.scorer_model),
        )
        template = "classification" if pool.labels_ else "generation"
        ctx.demonstrations = Retrieved(found.result, template)


class BudgetStage:
    """Fit demonstrations and prompt into one token budget: the least similar demonstrations go
    first; what still does not fit is left for compression to cut to ``budget_tokens``."""

    name = "budget"

    def __init__(self, budget: int | None) -> None:
        self.budget = budget

    def skip_reason(self, ctx: RequestContext) -> str | None:
        return None

    def run(self, ctx: RequestContext) -> None:
        ctx.text_budget = self.budget
        if not ctx.demonstrations:
            return
        from prompting import assemble

        result, template = ctx.demonstrations.result, ctx.demonstrations.template
        query = query_text(ctx)
        if ctx.kind == "chat":
            head = ctx.body["messages"][:-1]
            room = None
            if self.budget is not None:
                room = self.budget - sum(ctx.counter.count(message_text(m)) for m in head)
            try:
                assembled = assemble(
                    query, result, counter=uncached(ctx.counter), budget_tokens=room,
                    template=template,
                )  # fmt: skip
            except InputError:
                return  # not even one demonstration fits: the request goes on without them
            ctx.body["messages"] = [*head, *assembled.demo_messages, ctx.body["messages"][-1]]
        else:
            try:
                assembled = assemble(
                    query, result, counter=uncached(ctx.counter), budget_tokens=self.budget,
                    template=template,
                )  # fmt: skip
            except InputError:
                return
            ctx.body["prompt"] = assembled.prompt


class CompressionStage:
    """Compress the prompt (compression/) to a rate, a token target, or the shared budget."""

    name = "compression"

    def __init__(self, options: CompressionOptions, state: Any) -> None:
        self.options = options
        self.state = state
        self.settings = state.settings

    def skip_reason(self, ctx: RequestContext) -> str | None:
        if ctx.kind == "completion" and not isinstance(ctx.body.get("prompt"), str):
            return "the prompt is not a single string"
        tokens = ctx.prompt_tokens()
        fits = ctx.text_budget is not None and tokens <= ctx.text_budget
        if fits and self.options.rate is None and self.options.target_tokens is None:
            return f"{tokens} tokens fit the budget of {ctx.text_budget}"
        if tokens < self.settings.compress_min_tokens and not (ctx.text_budget and not fits):
            return f"{tokens} tokens, under compress_min_tokens={self.settings.compress_min_tokens}"
        limit = self.options.max_latency_ms or self.settings.compress_latency_budget_ms
        predicted = self.state.extras["latency"].predict_ms(self.options.method, tokens)
        if limit is not None and predicted is not None and predicted > limit:
            return f"predicted {predicted:.0f} ms, over the latency budget of {limit:.0f} ms"
        return None

    def run(self, ctx: RequestContext) -> None:
        import time

        from api.routes.compress import compression_dtype
        from compression import CLASSIFIER_METHODS, ProtectOptions, get_compressor

        tokens = ctx.prompt_tokens()
        target = self.options.target_tokens
        if target is None and ctx.text_budget is not None and tokens > ctx.text_budget:
            target = ctx.text_budget
        rate = self.options.rate if target is None else None
        provider = self.state.provider
        models: dict[str, Any] = (
            {
                "scorer": provider.token_classifier(dtype=compression_dtype(self.settings)),
                "embedder": provider.embedder(
                    self.settings.embedder_model, dtype=compression_dtype(self.settings)
                ),
            }
            if self.options.method in CLASSIFIER_METHODS
            else {"scorer": provider.scorer(self.settings.scorer_model)}
        )
        compressor = get_compressor(
            self.options.method,
            **models,
            counter=uncached(ctx.counter),
            min_tokens=0,
            protect=ProtectOptions(force_tokens=tuple(self.options.protect)),
        )
        original = dict(ctx.body)
        start = time.perf_counter()
        # One compression at a time: the scoring LM saturates the cores on its own.
        with self.state.extras["compression_lock"]:
            self._compress(compressor, ctx, rate, target)
            over = ctx.prompt_tokens() - (ctx.text_budget or tokens)
            if target is not None and ctx.text_budget is not None and over > 0:
                # The compressor counts the joined prompt; the budget holds per message, where
                # token boundaries can add a few: aim lower by the overshoot, once.
                ctx.body = dict(original)
                self._compress(compressor, ctx, None, max(1, target - over))
        self.state.extras["latency"].observe(
            self.options.method, tokens, time.perf_counter() - start
        )

    @staticmethod
    def _compress(compressor: Any, ctx: RequestContext, rate: Any, target: Any) -> None:
        if ctx.kind == "chat":
            result = compressor.compress(
                messages=ctx.body["messages"], rate=rate, target_tokens=target
            )
            ctx.body["messages"] = result.messages
        else:
            result = compressor.compress(ctx.body["prompt"], rate=rate, target_tokens=target)
            ctx.body["prompt"] = result.text


def _demonstrations(options: ThresherOptions, state: Any) -> DemonstrationStage | None:
    found = options.demonstrations
    if found is None:
        return None
    from api.routes.pools import install
    from prompting import ORDER_NAMES, RETRIEVER_NAMES

    _check_name(found.method, RETRIEVER_NAMES, "thresher.demonstrations.method")
    _check_name(found.order or "similarity", ORDER_NAMES, "thresher.demonstrations.order")
    pools = install(state)
    if not pools.exists(found.pool):
        known = ", ".join(pools.names()) or "none yet"
        raise NotFoundError(
            f"No pool named {found.pool!r} (pools: {known}); create it with POST /v1/pools.",
            field="thresher.demonstrations.pool",
        )
    return DemonstrationStage(found, state)


def _budget(options: ThresherOptions, state: Any) -> BudgetStage | None:
    if options.budget_tokens is None and options.demonstrations is None:
        return None
    return BudgetStage(options.budget_tokens)


def _compression(options: ThresherOptions, state: Any) -> CompressionStage | None:
    if options.compression is None:
        return None
    from compression import METHODS

    _check_name(options.compression.method, METHODS, "thresher.compression.method")
    return CompressionStage(options.compression, state)


def _check_name(name: str, known: Any, field: str) -> None:
    if name not in known:
        raise InputError(f"{field} {name!r} is unknown; use one of {sorted(known)}.", field=field)


def default_stages() -> StageRegistry:
    """retrieve + order (demonstrations) -> fit the budget -> compress."""
    registry = StageRegistry()
    registry.register("demonstrations", _demonstrations)
    registry.register("budget", _budget)
    registry.register("compression", _compression)
    return registry
