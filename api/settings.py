"""Service settings: the core :class:`~core.settings.Settings` plus what the proxy needs.

Read from ``THRESHER_*`` variables like the core settings; dict and list fields take JSON, e.g.
``THRESHER_ROUTES='{"gpt-4o-mini": {"url": "https://api.openai.com/v1", "api_key": "sk-..."}}'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    # Originals of elided spans kept for GET /v1/compress/originals/{handle} and the
    # thresher_expand tool (least recently used out; beside the message cache, in its SQLite
    # file's sibling "<name>.originals" when compress_cache_path is set).
    compress_originals_entries: int = Field(20_000, ge=1)
    # Rounds of thresher_expand calls the proxy answers itself per request before it asks the
    # backend to answer without the tool (see docs/content.md).
    compress_expand_rounds: int = Field(3, ge=1, le=16)
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
