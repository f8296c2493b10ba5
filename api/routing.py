"""The routing table: a public model name -> the backend that serves it.

Backends come only from settings, never from a request, so a caller cannot point the proxy at an
address of its choosing (no SSRF); an unknown model name is a 404, not a guess.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from thresher.api.settings import RouteSpec, ServiceSettings
from thresher.core.backends import ChatBackend, LocalBackend, make_backend
from thresher.core.catalog import canonical_name
from thresher.core.errors import BackendError, NotFoundError
from thresher.core.retry import ErrorObserver

log = logging.getLogger(__name__)
WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class Route:
    """The resolved destination of one request."""

    model: str
    backend: ChatBackend
    upstream_model: str
    tokenizer: str


class BackendRouter:
    """Resolves model names to backends built once from settings.

    Args:
        default: The deployment's default backend (``settings.backend``).
        default_models: Names the default backend answers to.
        routes: Extra routes by model name, each with its own backend.
        tokenizer: Token counter name used where a route names none.
        default_tokenizer: The default backend's counter (its own tokenizer when local).
    """

    def __init__(
        self,
        default: ChatBackend,
        default_models: list[str],
        routes: dict[str, tuple[ChatBackend, RouteSpec]] | None = None,
        tokenizer: str = "cl100k_base",
        default_tokenizer: str | None = None,
    ) -> None:
        self.default = default
        self.default_models = default_models
        self.routes = routes or {}
        self.tokenizer = tokenizer
        self.default_tokenizer = default_tokenizer or tokenizer

    def resolve(self, model: str) -> Route:
        """The route for ``model``; :class:`NotFoundError` names the routable models if none."""
        if model in self.routes:
            backend, spec = self.routes[model]
            return Route(
                model,
                backend,
                spec.upstream_model or model,
                spec.tokenizer or (spec.url == "local" and backend.name) or self.tokenizer,
            )
        if model in self.default_models:
            return Route(model, self.default, model, self.default_tokenizer)
        if WILDCARD in self.routes:
            backend, spec = self.routes[WILDCARD]
            return Route(model, backend, model, spec.tokenizer or self.tokenizer)
        raise NotFoundError(
            f"The model {model!r} is not routable here; use one of {self.names()} "
            "(GET /v1/models lists them).",
            field="model",
        )

    def names(self) -> list[str]:
        """Every model name listed in settings (the wildcard excluded)."""
        named = [m for m in self.routes if m != WILDCARD]
        return list(dict.fromkeys([*self.default_models, *named]))

    async def models(self) -> list[str]:
        """What is routable: named routes, plus what a wildcard backend lists about itself."""
        names = self.names()
        if WILDCARD in self.routes:
            backend, _ = self.routes[WILDCARD]
            try:
                names += [m for m in await backend.models() if m not in names]
            except BackendError as exc:
                log.warning("wildcard backend %s did not list its models: %s", backend.name, exc)
        return names

    def tokenizers(self) -> list[str]:
        """Every token counter a route may use (the lifespan loads them before traffic)."""
        named = [spec.tokenizer for _, spec in self.routes.values() if spec.tokenizer]
        return list(dict.fromkeys([self.tokenizer, self.default_tokenizer, *named]))

    def backends(self) -> list[ChatBackend]:
        """Each distinct backend once (several routes may share one)."""
        seen: dict[int, ChatBackend] = {id(self.default): self.default}
        for backend, _ in self.routes.values():
            seen.setdefault(id(backend), backend)
        return list(seen.values())

    async def aclose(self) -> None:
        for backend in self.backends():
            await backend.aclose()


def build_router(
    settings: ServiceSettings,
    provider: Any,
    default: ChatBackend | None = None,
    on_error: ErrorObserver | None = None,
) -> BackendRouter:
    """Build every backend named in settings once; routes to one URL share one backend.

    Args:
        settings: The routing table and the default backend.
        provider: Loads the local model when a route (or the default) is ``local``.
        default: A ready default backend (tests pass one built on session-loaded models).
        on_error: Sees every failed backend attempt (the service's metrics).
    """
    remote: dict[tuple[str, str | None, float | None], ChatBackend] = {}
    local: list[ChatBackend] = []
    if isinstance(default, LocalBackend):
        local.append(default)

    def make(url: str, api_key: str | None, timeout: float | None) -> ChatBackend:
        if url == "local":
            if not local:
                local.append(
                    make_backend(
                        "local",
                        provider=provider,
                        local_model=settings.local_model,
                        max_new_tokens=settings.local_max_new_tokens,
                    )  # fmt: skip
                )
            return local[0]
        key = (url, api_key, timeout)
        if key not in remote:
            # As many connections as requests may run at once, so none waits for a new one.
            wait = timeout or settings.backend_timeout
            remote[key] = make_backend(
                url, api_key=api_key, timeout=wait, retries=settings.backend_retries,
                backoff=settings.backend_backoff, deadline=settings.backend_deadline or wait,
                max_connections=settings.backend_max_connections,
                transport=settings.backend_transport, on_error=on_error,
            )  # fmt: skip
        return remote[key]

    default = default or make(settings.backend, settings.backend_api_key, None)
    if settings.backend == "local":
        name = canonical_name(settings.local_model)
        default_models = list(dict.fromkeys([name, settings.local_model, default.name]))
        default_tokenizer = name
    else:
        default_models = [settings.backend_model] if settings.backend_model else []
        default_tokenizer = settings.tokenizer
    routes = {
        model: (make(spec.url, spec.api_key, spec.timeout), spec)
        for model, spec in settings.routes.items()
    }
    if not default_models and WILDCARD not in routes:
        # A remote default with no model named forwards every name, as a plain proxy would.
        routes[WILDCARD] = (default, RouteSpec(url=settings.backend))
    return BackendRouter(default, default_models, routes, settings.tokenizer, default_tokenizer)
