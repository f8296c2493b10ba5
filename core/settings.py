"""Deployment settings, read from ``THRESHER_*`` environment variables (never at import)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from thresher.core.errors import ConfigError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_SCORER = "SmolLM2-135M-Instruct"


def default_cache_dir() -> Path:
    """``$THRESHER_CACHE_DIR``, else ``$XDG_CACHE_HOME/thresher``, else ``~/.cache/thresher``."""
    env = os.environ.get("THRESHER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "thresher"


class Settings(BaseSettings):
    """Everything a deployment can set; the defaults serve local models with no network."""

    model_config = SettingsConfigDict(env_prefix="THRESHER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    data_dir: Path = Field(default_factory=lambda: Path(".thresher"))
    device: str = "auto"
    # The models' dtype. "auto": float32 on the CPU and bf16 on CUDA for general use, and for
    # compression's models the dtype measured fastest on this CPU (bf16 only where native; see
    # docs/performance.md). Any other value is used for every model, nothing measured.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Intra-op threads for torch on the CPU (None: torch's default, one per physical core,
    # capped by this process's CPU affinity and cgroup CPU quota). On a crowded machine one
    # thread per process is often several times faster than contending.
    torch_threads: int | None = Field(None, ge=1)
    embedder_model: str = DEFAULT_EMBEDDER
    scorer_model: str = DEFAULT_SCORER
    # Where chat requests go: "local" (transformers on this machine) or the base URL of an
    # OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, TGI).
    backend: str = "local"
    backend_api_key: str | None = None
    backend_model: str | None = None
    backend_timeout: float = Field(120.0, gt=0)
    local_model: str = DEFAULT_SCORER
    local_max_new_tokens: int = Field(256, gt=0)
    api_keys: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    preload_models: bool = True

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        from thresher.core.device import check_device_name

        return check_device_name(value)

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, value: str) -> str:
        return check_backend_url(value, "THRESHER_BACKEND", field="backend")


def check_backend_url(value: str, name: str, *, field: str) -> str:
    """A backend is ``local`` or an http(s) base URL; returns it without a trailing slash."""
    if value != "local" and not value.startswith(("http://", "https://")):
        raise ConfigError(
            f"{name} is {value!r}; use 'local' or an http(s) base URL such as "
            "http://127.0.0.1:8080/v1.",
            field=field,
        )
    return value.rstrip("/")


def load_settings(**overrides: object) -> Settings:
    """Build :class:`Settings`, turning pydantic's report into one :class:`ConfigError`."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        raise ConfigError(
            f"Setting {name} (THRESHER_{name.upper()}): {message}", field=name
        ) from None
