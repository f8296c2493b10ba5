"""Service settings: the core :class:`~core.settings.Settings` plus what the proxy needs.

Read from ``THRESHER_*`` variables like the core settings; dict and list fields take JSON, e.g.
``THRESHER_ROUTES='{"gpt-4o-mini": {"url": "https://api.openai.com/v1", "api_key": "sk-..."}}'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from thresher.api.pricing import PriceSpec
from thresher.core.errors import ConfigError
from thresher.core.settings import Settings, check_backend_url


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

    # Model name -> backend. The key "*" routes every model name not listed. The default
    # backend (``backend``) always serves ``backend_model`` or, when local, ``local_model``.
    routes: dict[str, RouteSpec] = Field(default_factory=dict)
    tokenizer: str = "cl100k_base"
    # Deployment defaults of the per-request ``thresher`` object (same shape, JSON).
    pipeline: dict[str, Any] = Field(default_factory=dict)
    # Compress only when it pays: skip prompts shorter than this many tokens ...
    compress_min_tokens: int = Field(200, ge=0)
    # ... and skip when the predicted compression time (learned per method) exceeds this.
    compress_latency_budget_ms: float | None = Field(None, gt=0)
    # Bounded work (api/compression_service.py): compressions at a time, requests waiting for
    # one (more are forwarded uncompressed at once), a request's deadline, and a size cap on
    # the not-yet-seen tokens one request may compress.
    compress_workers: int = Field(1, ge=1, le=64)
    compress_queue: int = Field(8, ge=0)
    compress_deadline_ms: float = Field(10_000, gt=0)
    compress_max_new_tokens: int = Field(32_768, ge=1)
    # Messages remembered in their forwarded form (the prefix a backend caches stays the same).
    compress_cache_entries: int = Field(20_000, ge=1)
    # A SQLite file to remember them in instead, shared by the workers of one machine.
    compress_cache_path: Path | None = None
    # Message texts shorter than this are forwarded verbatim.
    compress_min_message_tokens: int = Field(48, ge=0)
    # Retries of what is safe to resend (core/retry.py), all within backend_deadline seconds
    # (default: the route's timeout); connections open to each backend at once.
    backend_retries: int = Field(2, ge=0, le=10)
    backend_max_connections: int = Field(256, ge=1)
    backend_backoff: float = Field(0.25, ge=0)
    backend_deadline: float | None = Field(None, gt=0)
    # httpx for every backend, or (auto) the lean HTTP/1.1 client for JSON to http:// ones.
    backend_transport: Literal["auto", "httpx", "http1"] = "auto"
    # Freeze what startup loaded and collect the young generation every N allocations (0: leave
    # Python's collector as it is, for an app embedded in a larger process); see api/app.py.
    gc_young_threshold: int = Field(50_000, ge=0)
    # Requests per minute per API key (or per client address when no keys are set).
    rate_limit_per_minute: int | None = Field(None, gt=0)
    # Wrong API keys per minute per client address before it is refused for a while (0: off).
    auth_failures_per_minute: int = Field(10, ge=0)
    # -- fleet (docs/fleet.md): money, the output-aware pays gate, audit mode, shared stores --
    money: bool = Field(
        False,
        description="Price every proxied request (api/pricing.py): the x-thresher-saved-usd "
        "header and the thresher_saved_usd counter, money in the audit report.",
    )
    prices: dict[str, PriceSpec] = Field(
        default_factory=dict,
        description="USD per 1M input, cached input and output tokens by model name, e.g. "
        '{"my-model": {"input": 0.5, "output": 1.5}}; models not listed are priced by the '
        "genai-prices package.",
    )
    pays_objective: Literal["time", "money"] = Field(
        "time",
        description="What the 'pays' gate predicts and compares: the request's time (prefill, "
        "decode, compression) or its price (input and output tokens).",
    )
    audit_sample: float = Field(
        0.0, ge=0, le=1,
        description="Audit mode for every route: the share of requests audited. Requests of a "
        "route in audit mode go to the backend unchanged; a sampled one is also compressed, "
        "and (within audit_send_per_minute) sent compressed, off the request path.",
    )  # fmt: skip
    audit_routes: dict[str, float] = Field(
        default_factory=dict,
        description="Audit mode per route: model name -> share audited (overrides "
        "audit_sample for that route; 0 takes the route out of audit mode).",
    )
    audit_rates: list[float] = Field(
        default_factory=lambda: [0.33, 0.5, 0.7],
        description="Rates an audited request is compressed at, one per sample in turn.",
    )
    audit_compression: dict[str, Any] = Field(
        default_factory=dict,
        description="Compression options the audit applies (as thresher.compression); "
        "default: the request's or the deployment's, else the default method.",
    )
    audit_send_per_minute: int = Field(
        0, ge=0,
        description="Compressed requests the audit may send to the backend per minute (its "
        "budget; 0: compute the compressed form and the input saving only).",
    )  # fmt: skip
    audit_judge_route: str | None = Field(
        None,
        description="A route whose model judges whether two long answers agree; default: "
        "the cosine similarity of their embeddings (embedder_model).",
    )
    audit_short_words: int = Field(
        12, ge=1,
        description="Answers of at most this many words agree only when they are equal "
        "(case, spacing and end punctuation aside).",
    )  # fmt: skip
    audit_similarity: float = Field(
        0.85, gt=0, le=1,
        description="Long answers agree when their embeddings' cosine similarity is at least "
        "this.",
    )  # fmt: skip
    audit_min_agreement: float = Field(
        0.9, ge=0, le=1,
        description="A rate pays in the audit report only where at least this share of its "
        "judged answers agree (and the total saving is positive).",
    )  # fmt: skip
    audit_queue: int = Field(
        16, ge=1,
        description="Audits waiting to run at most; a sample past this is dropped (counted), "
        "never waited for.",
    )  # fmt: skip
    redis_url: str | None = Field(
        None,
        description="A Redis server every replica shares (redis://host:port/db): forwarded "
        "message forms live there, with a local copy for when it is away.",
    )
    redis_prefix: str = Field("thresher", description="The first part of every Redis key.")
    redis_timeout_ms: float = Field(
        500, gt=0,
        description="Connect and read timeout of each Redis call; past it the replica goes on "
        "from its local copy and tries Redis again 5 s later.",
    )  # fmt: skip
    redis_ttl_s: float | None = Field(
        7 * 24 * 3600, gt=0, description="Expiry of a value stored in Redis (None: none)."
    )
    jobs_db: Path | None = None
    jobs_dir: Path | None = None
    # Folders a job's recipe may read (inputs, DSIR targets, classifier and model folders;
    # default: data_dir); relative paths resolve under the first. A job always reads its upload
    # and writes only inside its own folder (api/jobs/paths.py).
    jobs_input_roots: list[Path] = Field(default_factory=list)

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
