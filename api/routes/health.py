"""Liveness and what is loaded."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.state import State
from core.device import resolve_device

router = APIRouter(tags=["health"])


class HealthResponse(BaseModel):
    status: str
    models: list[str]
    backend: str
    device: str


@router.get("/healthz", response_model=HealthResponse)
async def healthz(state: State) -> HealthResponse:
    return HealthResponse(
        status="ok",
        models=state.provider.loaded(),
        backend=state.backend.name,
        device=resolve_device(state.provider.device),
    )
