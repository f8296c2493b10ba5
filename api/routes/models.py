"""``GET /v1/models``: the model names this deployment routes (from settings only)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from thresher.api.state import State

router = APIRouter(tags=["proxy"])


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    owned_by: str = "thresher"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: State) -> ModelList:
    """Every routable model name, in the OpenAI list shape."""
    assert state.router is not None  # built in the lifespan
    return ModelList(data=[ModelCard(id=m) for m in await state.router.models()])
