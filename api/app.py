"""The FastAPI app factory: ``create_app(settings)`` builds models and backends in its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routes import chat, compress, health, pools
from api.state import AppState
from core.backends import ChatBackend, LocalBackend, OpenAICompatibleBackend
from core.models import ModelProvider
from core.settings import Settings, load_settings

log = logging.getLogger(__name__)


def build_backend(settings: Settings, provider: ModelProvider) -> ChatBackend:
    """The backend named by settings: ``local`` or an OpenAI-compatible base URL."""
    if settings.backend == "local":
        lm = provider.causal_lm(settings.local_model)
        return LocalBackend(lm, max_new_tokens=settings.local_max_new_tokens)
    return OpenAICompatibleBackend(
        settings.backend, api_key=settings.backend_api_key, timeout=settings.backend_timeout
    )


def create_app(settings: Settings | None = None, *, state: AppState | None = None) -> FastAPI:
    """Build the service. Tests may pass a ready ``state`` to reuse session-loaded models."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = state
        if built is None:
            provider = ModelProvider.from_settings(settings)
            backend = build_backend(settings, provider)
            if settings.preload_models:
                provider.embedder(settings.embedder_model)
                provider.scorer(settings.scorer_model)
            built = AppState(settings=settings, provider=provider, backend=backend)
        pools.install(built)
        built.extras.setdefault("compressors", compress.build_compressors(settings, built.provider))
        app.state.thresher = built
        try:
            yield
        finally:
            await built.backend.aclose()

    app = FastAPI(
        title="Thresher",
        version="0.1.0",
        summary="Data selection, demonstration retrieval and prompt compression for LLMs.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # One router per resource, one line each.
    app.include_router(health.router)
    app.include_router(chat.router)
    app.include_router(pools.router)
    app.include_router(compress.router)
    return app
