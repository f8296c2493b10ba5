"""The FastAPI app factory: ``create_app(settings)`` builds models and backends in its lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from thresher.api.boundary import StrictJSON
from thresher.api.compression_service import CompressionService, LatencyModel
from thresher.api.errors import install_error_handlers
from thresher.api.guard import Guard
from thresher.api.jobs.store import JobStore
from thresher.api.jobs.worker import JobRunner
from thresher.api.lane import ProxyLane
from thresher.api.metrics import Metrics
from thresher.api.openapi import openapi
from thresher.api.pipeline import StageServices
from thresher.api.routes import (
    audit,
    chat,
    compress,
    health,
    jobs,
    models,
    monitoring,
    originals,
    pools,
)
from thresher.api.routing import build_router
from thresher.api.settings import ServiceSettings, service_settings
from thresher.api.stages import default_stages
from thresher.api.state import AppState, TenantPools
from thresher.api.work import WorkPool
from thresher.core.errors import ConfigError, ModelUnavailableError, NotFoundError
from thresher.core.models import ModelProvider
from thresher.core.settings import Settings

log = logging.getLogger(__name__)


def complete_state(state: AppState, settings: ServiceSettings, metrics: Metrics) -> AppState:
    """Fill in what a caller-built state lacks (tests pass a provider and a backend)."""
    state.settings = settings
    state.metrics = metrics
    router = state.router = state.router or build_router(
        settings, state.provider, default=state.backend, on_error=metrics.observe_backend_error
    )
    for name in router.tokenizers():  # no first request pays for loading a vocabulary
        state.prompt_counter(name)
    state.stages = state.stages or default_stages()
    if state.jobs is None:
        state.jobs = JobStore(settings.jobs_db_path())
    state.job_runner = state.job_runner or JobRunner(state.jobs)
    pools = state.pools = state.pools or TenantPools(settings, state.provider)
    compression = state.compression = state.compression or CompressionService.from_settings(
        settings, LatencyModel()
    )
    fleet_state(state, settings)
    if state.work is None:
        state.work = WorkPool(settings.work_threads, settings.work_queue)
    state.services = StageServices(settings, state.provider, compression, pools, router)
    return state


def fleet_state(state: AppState, settings: ServiceSettings) -> None:
    """Money, the pays gate's objective, audit mode and the shared store (docs/fleet.md);
    each stays None, and costs nothing, when its settings are off."""
    from thresher.api.audit import Auditor
    from thresher.api.pricing import PriceBook
    from thresher.api.stores import MemoryStore, StoreCache, shared_store

    assert state.compression is not None
    shared = shared_store(settings)
    if shared is not None:
        state.store = shared
        state.compression.cache = StoreCache(shared, "forms")
        state.compression.originals = StoreCache(shared, "originals")
    wants_prices = settings.money or settings.pays_objective == "money"
    audit = Auditor.from_settings(settings, state.store or MemoryStore())
    if wants_prices or settings.prices or audit is not None:
        state.prices = PriceBook(settings.prices)
    state.audit = audit
    judge = settings.audit_judge_route
    if audit is not None and judge is not None and state.router is not None:
        try:
            state.router.resolve(judge)
        except NotFoundError as exc:
            raise ConfigError(
                f"Setting audit_judge_route (THRESHER_AUDIT_JUDGE_ROUTE): {exc}",
                field="audit_judge_route",
            ) from None
    gate = state.compression.gate
    gate.prices, gate.objective = state.prices, settings.pays_objective


def check_configured_models(settings: ServiceSettings) -> None:
    """Fail startup naming the setting when a model it names cannot be had (checked without
    loading; a service that starts "ok" must not fail on its first compression)."""
    from thresher.core.catalog import check_model_name

    check_model_name(settings.embedder_model, "embedder", "embedder_model")
    check_model_name(settings.scorer_model, "causal-lm", "scorer_model")
    urls = [settings.backend, *(spec.url for spec in settings.routes.values())]
    if "local" in urls:
        check_model_name(settings.local_model, "causal-lm", "local_model")


def check_stores(settings: ServiceSettings) -> None:
    """Fail startup naming the setting when a database the service keeps (the message cache,
    the job store) cannot be opened: before any worker process starts, so a broken file stops
    ``thresher serve`` with one line and exit 2 whatever the worker count."""
    from thresher.api.compression_service import SQLiteMessageCache

    if settings.compress_cache_path is not None:
        SQLiteMessageCache(
            settings.compress_cache_path,
            settings.compress_cache_entries,
            settings.compress_cache_busy_ms,
        )
    JobStore(settings.jobs_db_path())


def preload(provider: ModelProvider, settings: ServiceSettings) -> None:
    """Load the configured models now; a failure names the setting that chose the model."""
    for setting, load in (
        ("embedder_model", lambda: provider.embedder(settings.embedder_model)),
        ("scorer_model", lambda: provider.scorer(settings.scorer_model)),
    ):
        try:
            load()
        except ModelUnavailableError as exc:
            raise ConfigError(
                f"Setting {setting} (THRESHER_{setting.upper()}): {exc}", field=setting
            ) from exc


def tune_gc(young: int) -> None:
    """Keep the cycle collector off the proxy's latency.

    The libraries and models loaded at startup are millions of objects that live as long as the
    process, and every full collection walked them all: pauses of tens of milliseconds. Frozen,
    the collector skips them. A proxied request allocates hundreds of containers, so Python's
    young-generation threshold (700) ran a collection on nearly every request, over the objects
    of all requests in flight; ``young`` allocations between collections make that rare
    (``bench/proxy.py`` measures the tail latency it saves).
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, max(middle, 20), max(old, 100))


class ThresherAPI(FastAPI):
    """FastAPI behind one front door: the guard (keys, body limit, rate limit, metrics) and the
    proxy routes' lane (api/lane.py), which serves the hot path without FastAPI's own
    middleware and routing; every other request goes on to FastAPI unchanged."""

    front: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)

    async def routes_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None, *, state: AppState | None = None, gc_tuning: bool = False
) -> FastAPI:
    """Build the service. Tests may pass a ready ``state`` to reuse session-loaded models.

    ``gc_tuning`` (what ``thresher serve`` asks for) freezes the heap after startup and spaces
    out young collections (:func:`tune_gc`): right for a server process of its own, wrong for an
    app embedded in a notebook kernel or a test run, so off by default."""
    service = service_settings(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = state
        if built is None:
            check_configured_models(service)
            provider = ModelProvider.from_settings(service)
            router = build_router(service, provider, on_error=metrics.observe_backend_error)
            if service.preload_models:
                preload(provider, service)
            built = AppState(
                settings=service, provider=provider, backend=router.default, router=router
            )
        complete_state(built, service, metrics)
        if built.store is not None and isinstance(app.front, Guard):
            app.front.share(built.store)  # replicas share one allowance per caller
        if service.preload_models:  # else on the first /v1/compress (a proxy starts at once)
            compress.preload_compressors(built)
        app.state.thresher = built
        runner = built.job_runner
        resumed = runner.resume()
        if resumed:
            log.warning("requeued %d selection jobs left running: %s", len(resumed), resumed)
        if gc_tuning and service.gc_young_threshold:
            tune_gc(service.gc_young_threshold)
        try:
            yield
        finally:
            if built.audit is not None:
                await built.audit.drain(timeout=5)
            if built.work is not None:  # waiting requests are answered now, running work
                built.work.close()  # is not awaited (its threads do not hold the exit)
            runner.stop()
            if built.router is not None:
                await built.router.aclose()

    app = ThresherAPI(
        title="Thresher",
        version="0.1.0",
        summary="Data selection, demonstration retrieval and prompt compression for LLMs.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # The guard in front of everything; behind it, the proxy's lane, then FastAPI's own stack.
    depth = service.max_json_depth
    app.front = Guard(
        ProxyLane(
            StrictJSON(app.routes_app, service=app, max_depth=depth), service=app, max_depth=depth
        ),
        api_keys=service.api_keys,
        max_body_bytes=service.max_body_bytes,
        rate_limit_per_minute=service.rate_limit_per_minute,
        metrics=metrics,
        auth_failures_per_minute=service.auth_failures_per_minute,
        tenants=service.tenants,
        trusted_proxies=service.trusted_proxies,
        max_callers=service.limiter_max_callers,
    )
    # One router per resource, one line each.
    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(monitoring.router)
    app.include_router(jobs.router)
    app.include_router(pools.router)
    app.include_router(compress.router)
    app.include_router(audit.router)
    app.include_router(originals.router)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    return app


def served_app() -> FastAPI:
    """The app of one ``thresher serve`` worker process, settings from the environment."""
    return create_app(gc_tuning=True)
