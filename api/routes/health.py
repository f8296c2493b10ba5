"""Liveness, and (to a caller with a key) what is loaded."""

from __future__ import annotations

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


@router.get("/healthz", response_model=HealthResponse, response_model_exclude_none=True)
async def healthz(state: State, authenticated: Authenticated) -> HealthResponse:
    """Up or not, for anyone (a load balancer has no key); details only with a valid key."""
    if not authenticated:
        return HealthResponse(status="ok")
    return HealthResponse(
        status="ok",
        models=state.provider.loaded(),
        backend=state.backend.name,
        device=resolve_device(state.provider.device),
    )
