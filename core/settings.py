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
    """Everything a deployment can set; the defaults serve local models with no network.

    Each field is read from ``THRESHER_<FIELD>`` (``THRESHER_PORT=9000``); lists and dicts take
    JSON. The docstring under each field is its entry in the settings reference (docs/).
    """

    model_config = SettingsConfigDict(
        env_prefix="THRESHER_", extra="ignore", use_attribute_docstrings=True
    )

    host: str = "127.0.0.1"
    """Address ``thresher serve`` binds (``0.0.0.0`` for every interface)."""
    port: int = Field(8000, ge=1, le=65535)
    """Port ``thresher serve`` listens on."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    """Log level of the ``thresher`` command (Python's level names)."""
    cache_dir: Path = Field(default_factory=default_cache_dir)
    """Where models converted once (SmolLM2 from its GGUF) are kept between runs (default
    ``$XDG_CACHE_HOME/thresher`` when ``XDG_CACHE_HOME`` is set)."""
    data_dir: Path = Field(default_factory=lambda: Path(".thresher"))
    """Where named demonstration pools, the selection jobs' database and job folders live."""
    device: str = "auto"
    """Device the models load on: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``,
    ``mps``."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Torch dtype of the models. ``auto``: bf16 on CUDA (float16 where the GPU lacks bf16); on
    the CPU float32, except compression's models (scoring LM, token classifier, ranker), which
    run in the dtype measured fastest on this CPU once per process (bf16 only where the CPU
    runs it natively; see the performance guide). Any other value is used for every model,
    nothing measured."""
    torch_threads: int | None = Field(None, ge=1)
    """Intra-op threads for torch on the CPU (unset: one per physical core, capped by this
    process's CPU affinity and cgroup CPU quota). On a crowded machine one thread per process
    often beats threads that contend for cores."""
    embedder_model: str = DEFAULT_EMBEDDER
    """Sentence embedder of pools, retrievers and the compression ranker: a model name Thresher
    ships or a sentence-transformers folder."""
    scorer_model: str = DEFAULT_SCORER
    """Small causal LM that scores tokens (``llmlingua``, ``longllmlingua``,
    ``selective-context``, perplexity steps): a model name Thresher ships or a Hugging Face
    folder."""
    backend: str = "local"
    """Where chat requests go: ``local`` (transformers on this machine) or the base URL of an
    OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, TGI)."""
    backend_api_key: str | None = None
    """API key sent to a remote ``backend``."""
    backend_model: str | None = None
    """The model name a remote ``backend`` serves (unset: every model name is forwarded)."""
    backend_timeout: float = Field(120.0, gt=0)
    """Seconds a backend request may take."""
    local_model: str = DEFAULT_SCORER
    """The model the ``local`` backend serves, and the name clients ask for it by."""
    local_max_new_tokens: int = Field(256, gt=0)
    """Tokens the ``local`` backend generates when a request sets no ``max_tokens``."""
    api_keys: list[str] = Field(default_factory=list)
    """Keys a client must send as ``Authorization: Bearer <key>`` (empty: the service is open).
    JSON list."""
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    """Largest request body accepted; larger ones are a 413."""
    preload_models: bool = True
    """Load the models at startup, so the first request does not wait for them."""

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
