"""Liveness, and (to a caller with a key) what is loaded and how compression's models run."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel, Field

from thresher.api.state import Authenticated, State
from thresher.core.device import resolve_device

router = APIRouter(tags=["health"])


class HealthResponse(BaseModel):
    status: str
    models: list[str] | None = Field(None, description="Loaded models (with a valid key).")
    backend: str | None = Field(None, description="The default backend (with a valid key).")
    device: str | None = Field(None, description="Where models run (with a valid key).")
    compute: dict[str, dict[str, str | int]] | None = Field(
        None,
        description="With a valid key: the dtype compression's models run in and torch's "
        "threads, each as {value, reason} (chosen per CPU by measurement unless set).",
    )


@router.get("/healthz", response_model=HealthResponse, response_model_exclude_none=True)
async def healthz(state: State, authenticated: Authenticated) -> HealthResponse:
    """Up or not, for anyone (a load balancer has no key); details only with a valid key."""
    if not authenticated:
        return HealthResponse(status="ok")
    provider = state.provider
    # Measured once per process (a few milliseconds), so off the event loop the first time.
    dtype = await asyncio.to_thread(provider.compression_precision)
    return HealthResponse(
        status="ok",
        models=provider.loaded(),
        backend=state.backend.name,
        device=resolve_device(provider.device),
        compute={"compression_dtype": dtype.as_dict(), "threads": provider.threads().as_dict()},
    )
