"""What the lifespan builds once and routes receive through ``Depends``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from thresher.core.backends import ChatBackend
from thresher.core.catalog import KNOWN_MODELS, canonical_name
from thresher.core.errors import InputError
from thresher.core.models import ModelProvider
from thresher.core.settings import Settings
from thresher.core.tokens import CachedCounter, TokenCounter, tiktoken_encoding_for

if TYPE_CHECKING:
    from thresher.api.audit import Auditor
    from thresher.api.compression_service import CompressionService
    from thresher.api.jobs.store import JobStore
    from thresher.api.jobs.worker import JobRunner
    from thresher.api.metrics import Metrics
    from thresher.api.pipeline import StageRegistry, StageServices
    from thresher.api.pricing import PriceBook
    from thresher.api.routing import BackendRouter
    from thresher.api.stores import Store
    from thresher.api.work import WorkPool
    from thresher.prompting import PoolStore


# The one tenant of a deployment without API keys (api/state.py tenant_of).
ANONYMOUS_TENANT = "anonymous"


@dataclass
class AppState:
    """The service's parts, built once per app (models, pools, backends, job runner, caches),
    each a typed field. Tests may pass the first three; the lifespan builds the rest
    (api/app.py ``complete_state``), among them the few services the pipeline's stages use
    (``services``)."""

    settings: Settings
    provider: ModelProvider
    backend: ChatBackend
    router: BackendRouter | None = None
    metrics: Metrics | None = None
    stages: StageRegistry | None = None
    jobs: JobStore | None = None
    job_runner: JobRunner | None = None
    pools: TenantPools | None = None
    # The compression stage's cache, worker pool and cost models (api/compression_service.py).
    compression: CompressionService | None = None
    # Thresher's own threads for request work, shared fairly by tenants (api/work.py).
    work: WorkPool | None = None
    counters: dict[str, TokenCounter] = field(default_factory=dict)
    # The fleet's parts (docs/fleet.md), each None when off: prices (money, the gate's money
    # objective, audit costs), audit mode, and the store replicas share (Redis).
    prices: PriceBook | None = None
    audit: Auditor | None = None
    store: Store | None = None
    # What the pipeline's stages use (api/pipeline.py StageServices), once the rest is built.
    services: StageServices | None = None

    def pool_store(self, tenant: str = ANONYMOUS_TENANT) -> PoolStore:
        """The demonstration pools ``tenant`` sees (see :class:`TenantPools`)."""
        if self.pools is None:
            self.pools = TenantPools(self.settings, self.provider)
        return self.pools(tenant)

    def prompt_counter(self, name: str) -> TokenCounter:
        """The counter of proxied prompts for tokenizer ``name``: one per name, remembering
        the counts of recent message texts (see :class:`thresher.core.tokens.CachedCounter`)."""
        counter = self.counters.get(name)
        if counter is None:
            counter = self.counters[name] = CachedCounter(self.provider.token_counter(name))
        return counter


class TenantPools:
    """The demonstration pools each tenant sees, each tenant's store built on first use.

    The anonymous tenant (no API keys) keeps its pools in the data folder, as the CLI does; a
    keyed tenant in a folder of its own (``ServiceSettings.tenants_dir``). Every tenant reads the
    deployment's shared pools (``shared_pools``, in the data folder) and changes none of them.
    The embedder loads when a pool first needs it.
    """

    def __init__(self, settings: Settings, provider: ModelProvider) -> None:
        from thresher.prompting import PoolStore

        self.settings = settings
        self.shared = tuple(getattr(settings, "shared_pools", ()))
        self.anonymous = PoolStore(
            settings.data_dir,
            lambda: provider.embedder(settings.embedder_model),
            shared_names=self.shared,
        )
        self.tenants: dict[str, PoolStore] = {}

    def __call__(self, tenant: str = ANONYMOUS_TENANT) -> PoolStore:
        if tenant == ANONYMOUS_TENANT:
            return self.anonymous
        store = self.tenants.get(tenant)
        if store is None:
            from thresher.prompting import PoolStore

            base = self.anonymous
            store = self.tenants[tenant] = PoolStore(
                self.settings.tenants_dir() / tenant,  # type: ignore[attr-defined]
                lambda: base.embedder,
                index=base.index,
                shared=base,
                shared_names=self.shared,
            )
        return store


def client_counter(provider: ModelProvider, name: str, field: str) -> TokenCounter:
    """The token counter a request names: an OpenAI model or encoding, or a known offline
    model. Never a folder path (the provider would load a tokenizer from it), and an unknown
    name is the caller's mistake (422 naming ``field``), not the service's (503)."""
    try:
        known = tiktoken_encoding_for(name) is not None
    except InputError as exc:
        raise InputError(str(exc), field=field) from None
    if not known and canonical_name(name) not in KNOWN_MODELS:
        raise InputError(
            f"{field} {name!r} is not a tokenizer here; use an OpenAI model or encoding "
            f"(cl100k_base, o200k_base, gpt-4o, ...) or one of {sorted(KNOWN_MODELS)}.",
            field=field,
        )
    return provider.token_counter(name)


async def get_state(request: Request) -> AppState:
    # async: FastAPI would run a plain def in the threadpool, a thread hop on every request.
    return request.app.state.thresher  # type: ignore[no-any-return]


State = Annotated[AppState, Depends(get_state)]



def tenant_of(scope: Mapping[str, Any]) -> str:
    """The tenant an ASGI request acts for: everything it stores (pools, jobs, uploads, cached
    forms) belongs to this name. The tenant settings map the caller's key to
    (``THRESHER_TENANTS``), else the key's digest; one anonymous tenant when keys are off."""
    return scope.get("thresher.tenant") or scope.get("thresher.caller") or ANONYMOUS_TENANT


async def get_tenant(request: Request) -> str:
    return tenant_of(request.scope)


async def get_authenticated(request: Request) -> bool:
    """Whether the request carried a valid key (always True when keys are off)."""
    return bool(request.scope.get("thresher.authenticated", True))


async def get_pools(state: State, request: Request) -> PoolStore:
    return state.pool_store(tenant_of(request.scope))


Tenant = Annotated[str, Depends(get_tenant)]
Pools = Annotated["PoolStore", Depends(get_pools)]
Authenticated = Annotated[bool, Depends(get_authenticated)]
