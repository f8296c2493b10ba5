"""The stages of the request pipeline, in order: demonstrations (retrieve + order), the shared
token budget, compression. Each is built per request from the merged ``thresher`` options."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from thresher.api.pipeline import (
    CompressionOptions,
    DemonstrationOptions,
    RequestContext,
    Retrieved,
    StageRegistry,
    StageServices,
    ThresherOptions,
    header_value,
)
from thresher.core.errors import InputError, NotFoundError
from thresher.core.record import message_text
from thresher.core.tokens import uncached

if TYPE_CHECKING:
    from thresher.api.compression_service import CompressionService
    from thresher.api.pays import Verdict
    from thresher.api.routing import BackendRouter
    from thresher.api.settings import ServiceSettings
    from thresher.api.state import TenantPools
    from thresher.core.models import ModelProvider


def query_text(ctx: RequestContext) -> str:
    """What demonstrations are retrieved for: the last user turn, or the completion prompt."""
    if ctx.kind == "chat":
        users = [m for m in ctx.body["messages"] if m.get("role") == "user"]
        return message_text(users[-1]) if users else ""
    prompt = ctx.body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


class DemonstrationStage:
    """Retrieve ``k`` demonstrations from a pool and order them (prompting/)."""

    name = "demonstrations"

    def __init__(
        self, options: DemonstrationOptions, pools: TenantPools, scorer: Callable[[], Any]
    ) -> None:
        self.options = options
        self.pools = pools
        self.scorer = scorer  # the causal LM of ordering by perplexity, loaded when asked for

    def check(self, ctx: RequestContext) -> None:
        """The pool must be one the request's tenant sees (its own, or a shared one)."""
        pools = self.pools(ctx.tenant)
        if not pools.exists(self.options.pool):
            known = ", ".join(pools.names()) or "none yet"
            raise NotFoundError(
                f"No pool named {self.options.pool!r} (pools: {known}); create it with "
                "POST /v1/pools.",
                field="thresher.demonstrations.pool",
            )

    def skip_reason(self, ctx: RequestContext) -> str | None:
        return None if query_text(ctx).strip() else "no user text to retrieve demonstrations for"

    def run(self, ctx: RequestContext) -> None:
        from thresher.prompting import demonstrate

        pools = self.pools(ctx.tenant)
        pool = pools.get(self.options.pool)
        found = demonstrate(
            pool,
            query_text(ctx),
            min(self.options.k, len(pool)),
            method=self.options.method,
            order=self.options.order or "similarity",
            retriever=pools.retriever(self.options.pool, self.options.method),
            scorer=self.scorer,
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
        from thresher.prompting import assemble

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
    """Compress the prompt (compression/) to a rate, a token target, or the shared budget.

    Chat messages go through :class:`thresher.compression.conversation.ConversationCompressor`: each
    message on its own terms, remembered in its forwarded form, so earlier turns go out in the
    same bytes and only new messages cost time (see api/compression_service.py for the pool,
    the deadline and the cost models that decide whether compressing pays).
    """

    name = "compression"

    def __init__(
        self,
        options: CompressionOptions,
        settings: ServiceSettings,
        provider: ModelProvider,
        service: CompressionService,
        router: BackendRouter | None,
    ) -> None:
        self.options = options
        self.settings = settings
        self.provider = provider
        self.service = service
        self.router = router  # the proxy's, to name a route's upstream model to the pays gate
        self.detail = ""
        # The client's kept messages, by identity: demonstrations placed before the last turn
        # shift the indices the client wrote.
        self._kept: set[int] = set()

    def check(self, ctx: RequestContext) -> None:
        keep = self.options.keep
        if not keep:
            return
        if ctx.kind != "chat":
            raise InputError(
                "thresher.compression.keep names chat messages; a completion prompt has none. "
                "Drop keep.",
                field="thresher.compression.keep",
            )
        n = len(ctx.body["messages"])
        for j, i in enumerate(keep):
            if not -n <= i < n:
                raise InputError(
                    f"thresher.compression.keep[{j}] is {i}, but the request has {n} messages; "
                    f"give message indices in [{-n}, {n}).",
                    field=f"thresher.compression.keep[{j}]",
                )
        targeted = {"rate", "target_tokens"} & self.options.model_fields_set
        if targeted and len({i % n for i in keep}) == n:
            raise InputError(
                f"thresher.compression.keep names every one of the {n} messages, so "
                f"{sorted(targeted)[0]} cannot hold; keep fewer messages or drop the stage.",
                field="thresher.compression.keep",
            )
        self._kept = {id(ctx.body["messages"][i]) for i in keep}

    def skip_reason(self, ctx: RequestContext) -> str | None:
        if ctx.kind == "completion" and not isinstance(ctx.body.get("prompt"), str):
            return "the prompt is not a single string"
        tokens = ctx.prompt_tokens()
        fits = ctx.text_budget is not None and tokens <= ctx.text_budget
        if fits and self.options.rate is None and self.options.target_tokens is None:
            return f"{tokens} tokens fit the budget of {ctx.text_budget}"
        if tokens < self.settings.compress_min_tokens and not (ctx.text_budget and not fits):
            return f"{tokens} tokens, under compress_min_tokens={self.settings.compress_min_tokens}"
        return None

    def _compressor(self, ctx: RequestContext) -> tuple[Any, Any]:
        """The method's compressor over models that check the request's stop (deadline, client
        gone) before every forward pass, and that check. Loading a model (the first request of
        a service that does not preload) does not count against the deadline: the clock is
        moved back by the time it took."""
        from thresher.api.compression_service import (
            deadline_check,
            stoppable_model,
            stoppable_scorer,
        )
        from thresher.compression import ProtectOptions, load_compressor

        deadline_ms = self.options.deadline_ms or self.service.deadline_ms
        start = time.monotonic()
        stops: list[Any] = []

        def stoppable(model: Any, kind: str) -> Any:  # called once the models are loaded
            stops.append(deadline_check(ctx.arrived + time.monotonic() - start, deadline_ms,
                                        ctx.cancelled))  # fmt: skip
            wrap = stoppable_model if kind == "token-classifier" else stoppable_scorer
            return wrap(model, stops[0])

        compressor = load_compressor(  # the models of /v1/compress and the CLI too
            self.options.method,
            self.provider,
            counter=uncached(ctx.counter),
            scorer_model=self.settings.scorer_model,
            embedder_model=self.settings.embedder_model,
            wrap=stoppable,
            min_tokens=0,
            protect=ProtectOptions(force_tokens=tuple(self.options.protect)),
        )
        return compressor, stops[0]

    def _mode(self, ctx: RequestContext) -> str:
        """How the per-message rate is set (part of the cache key): ``target_tokens``,
        ``budget`` (the shared budget does not hold), or ``rate``."""
        if self.options.target_tokens is not None:
            return "target_tokens"
        if ctx.text_budget is not None and ctx.prompt_tokens() > ctx.text_budget:
            return "budget"
        return "rate"

    def run(self, ctx: RequestContext) -> None:
        if ctx.kind == "chat":
            self._run_chat(ctx)
        else:
            self._run_prompt(ctx)

    # -- chat: per message, remembered -------------------------------------------------------

    def _rate(self, ctx: RequestContext, fixed: int) -> float:
        """The per-message rate: the option, or one that fits the token target, in steps of
        0.05 so that a growing conversation keeps its rate (and its cache keys) for turns."""
        from thresher.compression.budget import DEFAULT_RATE

        tokens = ctx.prompt_tokens()
        target = self.options.target_tokens
        if target is None and ctx.text_budget is not None and tokens > ctx.text_budget:
            target = ctx.text_budget
        if target is None:
            return self.options.rate or DEFAULT_RATE
        share = (target - fixed) / max(tokens - fixed, 1)
        return min(1.0, max(0.05, math.floor(share * 20) / 20))

    def _run_chat(self, ctx: RequestContext) -> None:
        from thresher.api.compression_service import RequestCache
        from thresher.api.work import Busy
        from thresher.compression.conversation import ConversationCompressor

        service = self.service
        compressor, stop = self._compressor(ctx)
        counter = uncached(ctx.counter)
        cache = RequestCache(service.cache)
        mode = self._mode(ctx)
        messages = ctx.body["messages"]
        keep = {i for i, m in enumerate(messages) if id(m) in self._kept}
        fixed = sum(
            counter.count(message_text(m))
            for i, m in enumerate(messages)
            if i in keep or m.get("role") in ("system", "developer")
        )
        rate = self._rate(ctx, fixed)
        # Under a token target the fitting rate moves as the chat grows: earlier messages keep
        # the form they were forwarded in (sticky) unless the target cannot hold that way.
        targeted = mode != "rate"

        def conversation_at(rate: float) -> ConversationCompressor:
            return ConversationCompressor(
                compressor, counter, cache=cache, target=ctx.route or counter.name,
                rate=rate, min_message_tokens=service.min_message_tokens,
                options_key=json.dumps(sorted(self.options.protect)), tenant=ctx.tenant,
                mode=mode,
            )  # fmt: skip

        earlier: tuple[Any, float] | None = None
        waited = 0.0
        why = ""
        # The pays gate may choose another rate on each turn: earlier messages keep the form
        # they were forwarded in, whatever rate chose it (the backend's prefix cache holds it).
        gated = self.options.when == "pays" and not targeted
        for attempt in range(3):
            sticky = (targeted and attempt == 0) or gated
            conversation = conversation_at(rate)
            plan = conversation.plan(messages, keep, sticky=sticky)
            verdict = self._decide(ctx, plan.new_tokens, rate)
            if verdict.rate != rate:  # a milder rate pays more: its forms have their own keys
                rate, why = verdict.rate, verdict.why
                conversation = conversation_at(rate)
                plan = conversation.plan(messages, keep, sticky=sticky)
            skip = verdict.skip
            if skip is not None:
                if verdict.does_not_pay:
                    conversation.remember_verbatim(plan)
                result = conversation.run(plan, should_stop=lambda why=skip: why)
            else:
                try:
                    with service.pool.slot(stop, ctx.tenant) as slot_wait:
                        waited += slot_wait
                        result = conversation.run(
                            plan, should_stop=stop, max_new_tokens=service.max_new_tokens
                        )
                except Busy as exc:
                    skip = str(exc)
                    waited += exc.waited
                    result = conversation.run(plan, should_stop=lambda why=skip: why)
                else:
                    if result.new_tokens and result.stopped is None:
                        service.latency.observe(
                            self.options.method, result.new_tokens, result.seconds
                        )
            keep_originals(service.originals, ctx.tenant, result.elided)
            if earlier is not None and (result.stopped or skip is not None):
                result, rate = earlier  # aiming lower ran out of time: keep the closer try
                skip = None
                break
            ctx.body["messages"] = result.messages
            goal = self.options.target_tokens or ctx.text_budget
            over = goal is not None and ctx.prompt_tokens() > goal
            if not over or skip is not None or result.stopped or rate <= 0.05:
                break
            earlier = (result, rate)
            rate = max(0.05, round(rate - 0.1, 2))  # the budget still does not hold: aim lower
        if skip is not None:
            decision = f"skip new messages: {skip}"
        elif result.stopped:
            decision = f"partial: {result.stopped}"
        else:
            decision = f"compress at a {why}" if why else "compress"
        counts = (
            f"compressed={result.count('compressed')}; cached={result.count('cached')}; "
            f"verbatim={result.count('verbatim')}; skipped={result.count('skipped')}; "
            f"new_tokens={result.new_tokens}; rate={rate}"
        )
        if cache.failed is not None:
            decision += "; message cache unavailable"
        self.detail = f"{decision}; {counts}; queued_ms={waited * 1000:.0f}"
        ctx.headers["x-thresher-compression"] = header_value(counts)
        ctx.headers["x-thresher-compression-decision"] = header_value(decision)

    def _decide(self, ctx: RequestContext, new_tokens: int, rate: float) -> Verdict:
        """The rate to compress the new messages at, or why they are not worth compressing now
        (the pays gate of api/pays.py: input and output, time or money)."""
        from thresher.api.pays import Inputs, Verdict

        if new_tokens == 0:
            return Verdict(rate)
        service = self.service
        cost = service.latency.predict_ms(self.options.method, new_tokens)
        prefill = service.prefill.ms_per_token(ctx.route)
        saving = None if prefill is None else new_tokens * (1 - rate) * prefill
        estimate = (
            f"new_tokens={new_tokens}; cost_ms={_ms(cost)}; saving_ms={_ms(saving)}; "
            f"prefill_ms_per_token={'unknown' if prefill is None else f'{prefill:.4f}'}"
        )
        verdict = Verdict(rate)
        # A token target is a requirement (a context window), not a saving to weigh.
        required = self.options.target_tokens is not None or ctx.text_budget is not None
        if self.options.when == "pays" and not required:
            route = self.router.resolve(ctx.route) if ctx.route and self.router else None
            names = (ctx.route, route.upstream_model) if route is not None else (ctx.route,)
            verdict = service.gate.decide(Inputs(
                ctx.route, names, new_tokens, ctx.prompt_tokens(), rate, cost, prefill,
                service.prefill.ms_per_output_token(ctx.route),
            ))  # fmt: skip
            estimate = f"{estimate}; {verdict.estimate}"
            if verdict.skip is not None and service.explore(ctx.route):
                verdict = Verdict(rate)  # measured again, not trusted forever
        ctx.headers["x-thresher-compression-estimate"] = header_value(estimate)
        limit = self.options.max_latency_ms or self.settings.compress_latency_budget_ms
        if verdict.skip is None and limit is not None and cost is not None and cost > limit:
            why = f"predicted {cost:.0f} ms, over the latency budget of {limit:.0f} ms"
            return Verdict(rate, skip=why)
        return verdict

    # -- a completion prompt: one text -------------------------------------------------------

    def _run_prompt(self, ctx: RequestContext) -> None:
        from thresher.api.work import Busy
        from thresher.compression.conversation import Stopped

        compressor, stop = self._compressor(ctx)
        tokens = ctx.prompt_tokens()
        target = self.options.target_tokens
        if target is None and ctx.text_budget is not None and tokens > ctx.text_budget:
            target = ctx.text_budget
        rate = self.options.rate if target is None else None
        if target is None and rate is None:
            rate = 0.5
        verdict = self._decide(ctx, tokens, rate or target / max(tokens, 1))  # type: ignore[operator]
        if rate is not None:
            rate = verdict.rate
        start = time.perf_counter()
        try:
            if verdict.skip is not None:
                self._skipped(ctx, verdict.skip)
                return
            with self.service.pool.slot(stop, ctx.tenant):
                if ctx.cancelled is not None and ctx.cancelled():
                    raise Stopped("client disconnected")
                result = compressor.compress(ctx.body["prompt"], rate=rate, target_tokens=target)
        except (Busy, Stopped) as exc:
            self._skipped(ctx, str(exc))
            return
        ctx.body["prompt"] = result.text
        self.service.latency.observe(self.options.method, tokens, time.perf_counter() - start)
        decision = f"compress at a {verdict.why}" if verdict.why else "compress"
        ctx.headers["x-thresher-compression-decision"] = header_value(decision)

    def _skipped(self, ctx: RequestContext, why: str) -> None:
        self.detail = f"skipped: {why}"
        ctx.headers["x-thresher-compression-decision"] = header_value(self.detail)


def keep_originals(store: Any, tenant: str, elided: list[Any]) -> None:
    """Remember what compression elided, under the tenant's keys (GET
    /v1/compress/originals/{handle} and the thresher_expand tool read them back)."""
    from thresher.compression.elision import originals_key

    for span in elided:
        store.put(originals_key(tenant, span.handle), span.record())


def _ms(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}"


def _demonstrations(options: ThresherOptions, services: StageServices) -> DemonstrationStage | None:
    found = options.demonstrations
    if found is None:
        return None
    from thresher.prompting import ORDER_NAMES, RETRIEVER_NAMES

    _check_name(found.method, RETRIEVER_NAMES, "thresher.demonstrations.method")
    _check_name(found.order or "similarity", ORDER_NAMES, "thresher.demonstrations.order")
    provider, scorer_model = services.provider, services.settings.scorer_model
    return DemonstrationStage(found, services.pools, lambda: provider.scorer(scorer_model))


def _budget(options: ThresherOptions, services: StageServices) -> BudgetStage | None:
    if options.budget_tokens is None and options.demonstrations is None:
        return None
    return BudgetStage(options.budget_tokens)


def _compression(options: ThresherOptions, services: StageServices) -> CompressionStage | None:
    if options.compression is None:
        return None
    from thresher.compression import METHODS

    _check_name(options.compression.method, METHODS, "thresher.compression.method")
    return CompressionStage(
        options.compression, services.settings, services.provider, services.compression,
        services.router,
    )  # fmt: skip


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
