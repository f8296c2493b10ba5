"""Service settings: the core :class:`~core.settings.Settings` plus what the proxy needs.

Read from ``THRESHER_*`` variables like the core settings; dict and list fields take JSON, e.g.
``THRESHER_ROUTES='{"gpt-4o-mini": {"url": "https://api.openai.com/v1", "api_key": "sk-..."}}'``.
"""

from __future__ import annotations

import re
from ipaddress import ip_network
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from thresher.api.pricing import PriceSpec
from thresher.core.errors import ConfigError
from thresher.core.settings import Settings, check_backend_url

TENANT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
# What an unmapped key's tenant looks like (api/guard.py): a named tenant must not pass for one.
DIGEST = re.compile(r"^[0-9a-f]{24}$")


class RouteSpec(BaseModel):
    """Where one model name goes. ``url`` is ``local`` or an OpenAI-compatible base URL."""

    model_config = ConfigDict(extra="forbid")

    url: str
    api_key: str | None = None
    # The name the backend knows the model by, when it differs from the public name.
    upstream_model: str | None = None
    # Token counter for reports and budgets: a tiktoken encoding or a local model name.
    tokenizer: str | None = None
    timeout: float | None = Field(None, gt=0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_backend_url(value, "Route url", field="routes")


class ServiceSettings(Settings):
    """Settings of the REST service and the proxy (defaults: local, open, no rate limit)."""

    routes: dict[str, RouteSpec] = Field(default_factory=dict)
    """Model name -> backend, JSON: ``{"gpt-4o-mini": {"url": "https://api.openai.com/v1",
    "api_key": "sk-..."}, "llama": "http://127.0.0.1:8080/v1"}`` (a bare string is the URL;
    other keys: ``upstream_model``, ``tokenizer``, ``timeout``). The key ``*`` routes every name
    not listed. The default ``backend`` always serves ``backend_model`` or, when local,
    ``local_model``."""
    tokenizer: str = "cl100k_base"
    """Token counter for budgets and reports where a route names none: a tiktoken encoding or a
    local model name."""
    pipeline: dict[str, Any] = Field(default_factory=dict)
    """Deployment defaults of the per-request ``thresher`` object (same shape, JSON), e.g.
    ``{"compression": {"method": "llmlingua2", "rate": 0.5}}``."""
    compress_min_tokens: int = Field(200, ge=0)
    """Prompts shorter than this many tokens are forwarded uncompressed."""
    compress_latency_budget_ms: float | None = Field(None, gt=0)
    """Skip compression when its predicted time (learned per method) exceeds this."""
    compress_workers: int = Field(1, ge=1, le=64)
    """Compressions that run at once (api/compression_service.py)."""
    compress_queue: int = Field(8, ge=0)
    """Requests of one tenant that may wait for a compression worker (tenants are served in
    turn); when its line is full, a request is forwarded uncompressed at once."""
    compress_deadline_ms: float = Field(10_000, gt=0)
    """A request's deadline for its stages and ``/v1/compress``, counted from its arrival (a
    request's ``deadline_ms`` may set its own)."""
    compress_max_new_tokens: int = Field(32_768, ge=1)
    """Most not-yet-seen tokens one request may compress."""
    compress_cache_entries: int = Field(20_000, ge=1)
    """Messages remembered in their forwarded form, so a backend's prefix cache keeps working on
    later turns."""
    compress_cache_path: Path | None = None
    """A SQLite file to remember them in instead of memory, shared by the workers of one
    machine (``redis_url``, when set, takes its place: shared by every replica)."""
    compress_min_message_tokens: int = Field(48, ge=0)
    """Message texts shorter than this are forwarded verbatim."""
    compress_originals_entries: int = Field(20_000, ge=1)
    """Originals of elided spans kept for ``GET /v1/compress/originals/{handle}`` and the
    ``thresher_expand`` tool (least recently used out); with ``compress_cache_path`` they live in
    its sibling SQLite file ``<name>.originals``, shared by the workers of one machine."""
    compress_expand_rounds: int = Field(3, ge=1, le=16)
    """Rounds of ``thresher_expand`` calls the proxy answers itself per request; the last round
    goes without the tool, so the model answers (docs/content.md)."""
    backend_retries: int = Field(2, ge=0, le=10)
    """Retries of what is safe to resend: a request that never reached the backend, or one the
    backend answered with 429 or 5xx (core/retry.py)."""
    backend_max_connections: int = Field(256, ge=1)
    """Connections open to each backend at once."""
    backend_backoff: float = Field(0.25, ge=0)
    """Seconds before the first retry; later retries wait longer."""
    backend_deadline: float | None = Field(None, gt=0)
    """Seconds a request and all its retries may take (unset: the route's timeout)."""
    backend_transport: Literal["auto", "httpx", "http1"] = "auto"
    """``auto``: the lean HTTP/1.1 client for JSON to ``http://`` backends and httpx for the
    rest; ``httpx``: httpx for every backend."""
    gc_young_threshold: int = Field(50_000, ge=0)
    """``thresher serve`` freezes what startup loaded out of Python's garbage collector and
    collects the young generation every this many allocations (0: leave the collector as it is);
    see api/app.py."""
    rate_limit_per_minute: int | None = Field(None, gt=0)
    """Requests per minute per API key, or per client address when no keys are set (unset: no
    limit)."""
    auth_failures_per_minute: int = Field(10, ge=0)
    """Wrong API keys per minute per client address before it is refused for a while (0: no
    limit)."""
    # -- fleet (docs/fleet.md): money, the output-aware pays gate, audit mode, shared stores --
    money: bool = False
    """Price every proxied request (api/pricing.py): the ``x-thresher-saved-usd`` header and the
    ``thresher_saved_usd`` counter."""
    prices: dict[str, PriceSpec] = Field(default_factory=dict)
    """USD per 1M input, cached input and output tokens by model name, JSON, e.g.
    ``{"my-model": {"input": 0.5, "cached_input": 0.25, "output": 1.5}}``; models not listed are
    priced by the genai-prices package."""
    pays_objective: Literal["time", "money"] = "time"
    """What the ``pays`` gate predicts and compares, output included: the request's time
    (prefill, decode, compression) or its price (input and output tokens)."""
    audit_sample: float = Field(0.0, ge=0, le=1)
    """Audit mode for every route: the share of requests audited. A route in audit mode is
    forwarded unchanged; a sampled request is also compressed, and (within
    ``audit_send_per_minute``) sent compressed, off the request path."""
    audit_routes: dict[str, float] = Field(default_factory=dict)
    """Audit mode per route, JSON: model name -> share audited (overrides ``audit_sample``; 0
    takes the route out of audit mode)."""
    audit_rates: list[float] = Field(default_factory=lambda: [0.33, 0.5, 0.7])
    """Rates an audited request is compressed at, one per sample in turn."""
    audit_compression: dict[str, Any] = Field(default_factory=dict)
    """Compression options the audit applies (as ``thresher.compression``), over the request's
    or the deployment's."""
    audit_send_per_minute: int = Field(0, ge=0)
    """Compressed requests the audit may send to the backend per minute (0: compute the
    compressed form and the input saving only)."""
    audit_judge_route: str | None = None
    """A route whose model judges whether two long answers agree (unset: the cosine similarity
    of their embeddings, ``embedder_model``)."""
    audit_short_words: int = Field(12, ge=1)
    """Answers of at most this many words agree only when equal (case, spacing and end
    punctuation aside)."""
    audit_similarity: float = Field(0.85, gt=0, le=1)
    """Long answers agree when their embeddings' cosine similarity is at least this."""
    audit_min_agreement: float = Field(0.9, ge=0, le=1)
    """A rate pays in the audit report only where at least this share of its judged answers
    agree (and the total saving is positive)."""
    audit_queue: int = Field(16, ge=1)
    """Audits running at most; a sample past this is dropped (and counted), never waited for."""
    redis_url: str | None = None
    """A Redis every replica shares (``redis://host:port/db``): forwarded message forms, the
    originals of elided spans and the rate limits' counts live there, with a local copy for when
    it is away."""
    redis_prefix: str = "thresher"
    """The first part of every Redis key."""
    redis_timeout_ms: float = Field(500, gt=0)
    """Connect and read timeout of each Redis call; past it the replica goes on from its local
    copy and tries Redis again 5 s later."""
    redis_ttl_s: float | None = Field(7 * 24 * 3600, gt=0)
    """Expiry of a value stored in Redis (unset: none)."""
    jobs_db: Path | None = None
    """The selection jobs' SQLite database (unset: ``jobs.sqlite`` under ``data_dir``)."""
    jobs_dir: Path | None = None
    """Where each selection job gets its folder (unset: ``jobs/`` under ``data_dir``)."""
    jobs_input_roots: list[Path] = Field(default_factory=list)
    """Folders a job's recipe may read (inputs, DSIR targets, classifier and model folders;
    unset: ``data_dir``), JSON list; relative paths resolve under the first. A job always reads
    its upload and writes only inside its own folder (api/jobs/paths.py); Thresher's own
    folders (other jobs, pools, databases) are never input."""
    tenants: dict[str, list[str]] = Field(default_factory=dict)
    """Tenant name -> the API keys that act for it, JSON, e.g. ``{"team-a": ["key-1",
    "key-2"]}``. Everything a request stores (pools, jobs, uploads, cached forms) belongs to its
    tenant. A key listed here needs no entry in ``api_keys``; a key of ``api_keys`` in no tenant
    is a tenant of its own (docs/security.md)."""
    shared_pools: list[str] = Field(default_factory=list)
    """Pools in the data folder (built with ``thresher pool build``) that every tenant may read
    and none may change through the API, JSON list."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or CIDR networks of reverse proxies whose ``X-Forwarded-For`` is believed, JSON
    list; from any other peer the client address is the socket's."""
    limiter_max_callers: int = Field(100_000, ge=1)
    """Callers the rate limiters remember at most (the least recently seen idle one is forgotten
    first, never one that is blocked)."""
    max_json_depth: int = Field(64, ge=2, le=512)
    """JSON bodies (and JSON text in form fields) nested deeper than this are a 400."""
    max_demonstrations: int = Field(256, ge=1)
    """Demonstrations one ``/v1/demonstrations`` request may ask for (``k``); DPP's and MMR's
    memory grows with its square."""
    compress_models: dict[str, Path] = Field(default_factory=dict)
    """Token classifiers ``/v1/compress`` may name in ``model`` (llmlingua2): a name -> its
    folder, JSON."""
    models_root: Path | None = None
    """A folder whose subfolders ``/v1/compress`` may name in ``model``, relative to it (unset:
    none)."""
    work_threads: int = Field(8, ge=1, le=256)
    """Threads of Thresher's own pool for request work (pipeline stages, ``/v1/compress``); one
    tenant holds at most all but one."""
    work_queue: int = Field(64, ge=0)
    """Requests of one tenant that may wait for a worker; more are answered at once (forwarded
    unchanged by the proxy, 429 from ``/v1/compress``)."""
    compress_cache_busy_ms: float = Field(50, ge=0, le=60_000)
    """How long a request waits for a SQLite message cache another process holds locked before
    going on without it."""

    @field_validator("tenants")
    @classmethod
    def _check_tenants(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[str, str] = {}
        for name, keys in value.items():
            if not TENANT_NAME.match(name) or DIGEST.match(name) or name == "anonymous":
                raise ValueError(
                    f"tenant name {name!r} is not allowed; use 1-64 letters, digits, '_', '-' "
                    "or '.', starting with a letter, not 'anonymous' nor 24 hex digits"
                )
            if not keys:
                raise ValueError(f"tenant {name!r} has no keys; give it at least one")
            for key in keys:
                if not key:
                    raise ValueError(f"tenant {name!r} has an empty key")
                if seen.setdefault(key, name) != name:
                    raise ValueError(f"a key of tenant {name!r} is also a key of {seen[key]!r}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network; give e.g. 10.0.0.5 or "
                    "10.0.0.0/8"
                ) from None
        return value

    @field_validator("routes", mode="before")
    @classmethod
    def _plain_urls(cls, value: Any) -> Any:
        # A bare string is shorthand for {"url": string}.
        if isinstance(value, dict):
            return {k: {"url": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("audit_rates")
    @classmethod
    def _check_rates(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < r < 1 for r in value):
            raise ValueError(f"give rates between 0 and 1 (exclusive), e.g. [0.33, 0.5]: {value}")
        return value

    @field_validator("audit_routes")
    @classmethod
    def _check_shares(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"audited shares are between 0 and 1; got {bad}")
        return value

    def jobs_db_path(self) -> Path:
        return self.jobs_db or self.data_dir / "jobs.sqlite"

    def jobs_dir_path(self) -> Path:
        return self.jobs_dir or self.data_dir / "jobs"

    def tenants_dir(self) -> Path:
        """Where each keyed tenant's own pools live (``<tenants_dir>/<tenant>/pools``)."""
        return self.data_dir / "tenants"


def service_settings(settings: Settings | None = None, **overrides: object) -> ServiceSettings:
    """Upgrade core settings (or read the environment) into :class:`ServiceSettings`."""
    from pydantic import ValidationError

    if isinstance(settings, ServiceSettings) and not overrides:
        return settings
    values = settings.model_dump(exclude_unset=True) if settings is not None else {}
    try:
        return ServiceSettings(**{**values, **overrides})  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        top = name.split(".")[0]
        raise ConfigError(
            f"Setting {name} (THRESHER_{top.upper()}): {message}", field=name
        ) from None
