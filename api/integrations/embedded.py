"""Thresher's request pipeline inside another process (LiteLLM's proxy, a LangChain or LlamaIndex
app): the services ``thresher serve``'s lifespan builds for the pipeline's stages
(:class:`thresher.api.pipeline.StageServices`: settings, models, compression, pools), without a
backend, a router or a job store, since the host routes, answers and logs.

The adapters in this package are thin: they turn their host's objects into the ``thresher``
options and the chat body that Thresher's own proxy would get, run the same stages through
:class:`EmbeddedPipeline`, and turn the result back. So the same options do the same thing in
each host as through ``thresher serve``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import TYPE_CHECKING, Any

from thresher.api.pipeline import (
    Kind,
    Pipeline,
    PipelineReport,
    RequestContext,
    StageRegistry,
    StageServices,
    ThresherOptions,
    deep_merge,
    merge_options,
)
from thresher.api.settings import ServiceSettings, service_settings
from thresher.core.settings import Settings

if TYPE_CHECKING:
    from thresher.core.tokens import TokenCounter

QUESTION_ROLE = "user"
# The metadata key under which the document adapters put the pipeline's report.
REPORT_KEY = "thresher"


def missing_extra(host: str, extra: str, exc: ImportError) -> ImportError:
    """The ImportError (:class:`DependencyMissingError`) an adapter raises when its host
    package is not installed; it names the extra."""
    from thresher.core.errors import DependencyMissingError

    return DependencyMissingError(exc.name or host, extra)


@functools.cache
def shared_provider(cache_dir: str, device: str, dtype: str, threads: int | None) -> Any:
    """One provider per model configuration in this process: a LangChain compressor and a
    LlamaIndex postprocessor built with no arguments share one copy of each model."""
    from thresher.core.models import ModelProvider

    return ModelProvider(cache_dir=cache_dir, device=device, dtype=dtype, torch_threads=threads)


class EmbeddedPipeline:
    """Thresher's request pipeline (demonstrations, budget, compression) on a chat body.

    Args:
        options: Deployment defaults of the ``thresher`` object (the same shape as a proxied
            request's), overlaid on ``settings.pipeline``; each request may overlay them again.
        settings: Service settings, or a mapping of overrides of them (default: read from
            ``THRESHER_*`` like ``thresher serve``).
        provider: A loaded :class:`thresher.core.models.ModelProvider` to share (default: the one
            every adapter built with the same model settings shares).
        tokenizer: The token counter for budgets and reports (default: ``settings.tokenizer``).
        preload: Load the compression stage's models here (:meth:`warm`), unless
            ``settings.preload_models`` is off, so that the first call compresses like the rest
            (a model that loads inside a call would spend that call's deadline).
    """

    def __init__(
        self,
        options: dict[str, Any] | None = None,
        *,
        settings: Settings | dict[str, Any] | None = None,
        provider: Any = None,
        tokenizer: str | None = None,
        preload: bool = False,
    ) -> None:
        # LiteLLM's config.yaml can only give a mapping: overrides of the THRESHER_* settings.
        self.settings: ServiceSettings = (
            service_settings(None, **settings)
            if isinstance(settings, dict)
            else service_settings(settings)
        )
        base = dict(self.settings.pipeline)
        # A bad deployment option is a configuration error, seen when the host starts.
        self.defaults = deep_merge(base, options or {})
        # Validated once, and shared by every request that overlays nothing (stages only read
        # their options).
        self.default_options = merge_options(self.defaults, None)
        self.tokenizer = tokenizer or self.settings.tokenizer
        self._provider = provider
        self._built: tuple[StageServices, StageRegistry, TokenCounter] | None = None
        self._lock = threading.Lock()
        if preload and self.settings.preload_models:
            self.warm()

    @property
    def services(self) -> StageServices:
        """The services the stages use, built on first use (no model loads here)."""
        return self._build()[0]

    @property
    def counter(self) -> TokenCounter:
        """The token counter of budgets and reports (``tokenizer``), remembering recent texts."""
        return self._build()[2]

    def _build(self) -> tuple[StageServices, StageRegistry, TokenCounter]:
        with self._lock:
            if self._built is None:
                from thresher.api.compression_service import CompressionService
                from thresher.api.stages import default_stages
                from thresher.api.state import TenantPools
                from thresher.core.tokens import CachedCounter

                settings = self.settings
                provider = self._provider or shared_provider(
                    str(settings.cache_dir), settings.device, settings.dtype,
                    settings.torch_threads,
                )  # fmt: skip
                services = StageServices(
                    settings, provider, CompressionService.from_settings(settings),
                    TenantPools(settings, provider),
                )  # fmt: skip
                counter = CachedCounter(provider.token_counter(self.tokenizer))
                self._built = (services, default_stages(), counter)
            return self._built

    def warm(self) -> None:
        """Load what compression needs now: the default method's models (``llmlingua2`` when the
        defaults configure no compression, since a request may ask for it), in the dtype chosen
        for this machine, and the token counter."""
        from thresher.compression import DEFAULT_METHOD, load_compressor

        compression = self.default_options.compression
        load_compressor(
            compression.method if compression is not None else DEFAULT_METHOD,
            self.services.provider,
            counter=self.counter,
            scorer_model=self.settings.scorer_model,
            embedder_model=self.settings.embedder_model,
        )

    def options(self, *layers: dict[str, Any] | None) -> ThresherOptions:
        """The defaults overlaid by each ``thresher`` object in turn (a ``null`` switches a stage
        off, as in a proxied request); InputError naming the field if the result is invalid."""
        given = [layer for layer in layers if layer]
        if not given:
            return self.default_options
        merged = self.defaults
        for layer in given:
            merged = deep_merge(merged, layer)
        return merge_options(merged, None)

    def run(
        self, kind: Kind, body: dict[str, Any], options: ThresherOptions | dict[str, Any] | None
    ) -> PipelineReport:
        """Run the stages ``options`` configure over ``body`` in place; the report says what
        they did. A caller's mistake (unknown pool or method) raises before anything runs; a
        stage that fails once running leaves ``body`` as it was (fail open)."""
        pipeline, ctx = self._prepare(kind, body, options)
        return self._finish(body, ctx, pipeline.run(ctx))

    async def arun(
        self, kind: Kind, body: dict[str, Any], options: ThresherOptions | dict[str, Any] | None
    ) -> PipelineReport:
        """:meth:`run` for an event loop, as Thresher's proxy runs it: the stages are built on
        the loop and, when there are any, run in a thread (they may load or run models)."""
        pipeline, ctx = self._prepare(kind, body, options)
        report = (
            await asyncio.to_thread(pipeline.run, ctx) if pipeline.stages else pipeline.run(ctx)
        )
        return self._finish(body, ctx, report)

    def _prepare(
        self, kind: Kind, body: dict[str, Any], options: ThresherOptions | dict[str, Any] | None
    ) -> tuple[Pipeline, RequestContext]:
        if not isinstance(options, ThresherOptions):
            options = self.options(options)
        services, stages, counter = self._build()
        ctx = RequestContext(kind, body, options, counter)
        return Pipeline(stages.build(options, services)), ctx

    @staticmethod
    def _finish(
        body: dict[str, Any], ctx: RequestContext, report: PipelineReport
    ) -> PipelineReport:
        if ctx.body is not body:  # the pipeline rebinds the body; the caller holds this one
            body.clear()
            body.update(ctx.body)
        return report

    def compress_passages(
        self, passages: list[str], query: str, options: dict[str, Any] | None = None
    ) -> tuple[list[str], PipelineReport]:
        """Compress retrieved passages for ``query``: the chat request Thresher's proxy would get
        with each passage as a user message and the query as the last (kept, and the question
        that question-aware methods condition on). Returns the passages in their order."""
        merged = self.options(options)
        if merged.demonstrations is not None:
            from thresher.core.errors import ConfigError

            raise ConfigError(
                "thresher.demonstrations adds messages and has no place among retrieved "
                "passages; drop it from this adapter's options.",
                field="thresher.demonstrations",
            )
        messages = [{"role": QUESTION_ROLE, "content": p} for p in passages]
        asked = bool(query.strip())
        if asked:
            messages.append({"role": QUESTION_ROLE, "content": query})
        body: dict[str, Any] = {"messages": messages}
        report = self.run("chat", body, merged)
        out = body["messages"][: len(passages)]
        return [str(m.get("content", "")) for m in out], report


def passage_options(
    method: str,
    rate: float | None,
    target_tokens: int | None,
    protect: list[str] | None,
    max_latency_ms: float | None,
    budget_tokens: int | None,
) -> dict[str, Any]:
    """The ``thresher`` object of the document adapters' keyword options."""
    compression: dict[str, Any] = {"method": method, "protect": list(protect or [])}
    if rate is not None:
        compression["rate"] = rate
    if target_tokens is not None:
        compression["target_tokens"] = target_tokens
    if max_latency_ms is not None:
        compression["max_latency_ms"] = max_latency_ms
    options: dict[str, Any] = {"compression": compression}
    if budget_tokens is not None:
        options["budget_tokens"] = budget_tokens
    return options
