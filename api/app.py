"""The FastAPI app factory: ``create_app(settings)`` builds models and backends in its lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.compression_service import CompressionService, LatencyModel
from api.errors import install_error_handlers
from api.guard import Guard
from api.jobs.store import JobStore
from api.jobs.worker import JobRunner
from api.lane import ProxyLane
from api.metrics import Metrics
from api.openapi import openapi
from api.proxy import RetryPolicy
from api.routes import chat, compress, health, jobs, models, monitoring, pools
from api.routing import build_router
from api.settings import ServiceSettings, service_settings
from api.stages import default_stages
from api.state import AppState
from core.models import ModelProvider
from core.settings import Settings

log = logging.getLogger(__name__)


def complete_state(state: AppState, settings: ServiceSettings, metrics: Metrics) -> AppState:
    """Fill in what a caller-built state lacks (tests pass a provider and a backend)."""
    state.settings = settings
    state.metrics = metrics
    state.router = state.router or build_router(settings, state.provider, default=state.backend)
    for name in state.router.tokenizers():  # no first request pays for loading a vocabulary
        state.prompt_counter(name)
    state.retry = state.retry or RetryPolicy(settings.backend_retries, settings.backend_backoff)
    state.stages = state.stages or default_stages()
    if state.jobs is None:
        state.jobs = JobStore(settings.jobs_db_path())
    state.extras.setdefault("job_runner", JobRunner(state.jobs))
    state.extras.setdefault("latency", LatencyModel())
    if state.compression is None:
        state.compression = CompressionService.from_settings(settings, state.extras["latency"])
    return state


def tune_gc(young: int) -> None:
    """Keep the cycle collector off the proxy's latency.

    The libraries and models loaded at startup are millions of objects that live as long as the
    process, and every full collection walked them all: pauses of tens of milliseconds. Frozen,
    the collector skips them. A proxied request allocates hundreds of containers, so Python's
    young-generation threshold (700) ran a collection on nearly every request, over the objects
    of all requests in flight; ``young`` allocations between collections make that rare.
    Measured with ``bench/proxy.py`` (50 clients, 1 worker): p99 added +78 ms with the heap
    frozen alone, +27 ms with ``young`` = 50,000 as well.
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


def create_app(settings: Settings | None = None, *, state: AppState | None = None) -> FastAPI:
    """Build the service. Tests may pass a ready ``state`` to reuse session-loaded models."""
    service = service_settings(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = state
        if built is None:
            provider = ModelProvider.from_settings(service)
            router = build_router(service, provider)
            if service.preload_models:
                provider.embedder(service.embedder_model)
                provider.scorer(service.scorer_model)
            built = AppState(
                settings=service, provider=provider, backend=router.default, router=router
            )
        complete_state(built, service, metrics)
        pools.install(built)
        if service.preload_models:  # else on the first /v1/compress (a proxy starts in 1 s)
            compress.compressors(built)
        app.state.thresher = built
        runner = built.extras["job_runner"]
        resumed = runner.resume()
        if resumed:
            log.warning("requeued %d selection jobs left running: %s", len(resumed), resumed)
        if service.gc_young_threshold:
            tune_gc(service.gc_young_threshold)
        try:
            yield
        finally:
            runner.stop()
            assert built.router is not None
            await built.router.aclose()

    app = ThresherAPI(
        title="Thresher",
        version="0.1.0",
        summary="Data selection, demonstration retrieval and prompt compression for LLMs.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # The guard in front of everything; behind it, the proxy's lane, then FastAPI's own stack.
    app.front = Guard(
        ProxyLane(app.routes_app, service=app),
        api_keys=service.api_keys,
        max_body_bytes=service.max_body_bytes,
        rate_limit_per_minute=service.rate_limit_per_minute,
        metrics=metrics,
    )
    # One router per resource, one line each.
    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(monitoring.router)
    app.include_router(jobs.router)
    app.include_router(pools.router)
    app.include_router(compress.router)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    return app
