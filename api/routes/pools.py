"""Demonstration pools and retrieval: ``/v1/pools`` and ``/v1/demonstrations``.

Routes are plain ``def`` so embedding and LM probing run in the threadpool, not on the loop.
Each tenant sees its own pools and the deployment's shared ones (read-only); another tenant's
pool answers as a missing one. One request asks for at most ``max_demonstrations``: DPP's and
MMR's memory grows with the square of ``k``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from thresher.api.errors import error_responses
from thresher.api.state import Pools, State, client_counter
from thresher.core.errors import InputError
from thresher.prompting import PoolStore, check_pool_name, demonstrate, demonstration

router = APIRouter(tags=["pools"])


Store = Pools


class PoolRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    text: str
    label: str | None = None
    output: str | None = None


# The spec says what prompting.check_pool_name enforces (it stays the check).
POOL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class CreatePoolRequest(BaseModel):
    name: str = Field(json_schema_extra={"pattern": POOL_NAME})
    records: list[PoolRecord] = Field(min_length=1)
    replace: bool = False


class AddRecordsRequest(BaseModel):
    records: list[PoolRecord] = Field(min_length=1)


class PoolResponse(BaseModel):
    name: str
    size: int
    labels: list[str]
    index: str


class DemonstrationsRequest(BaseModel):
    pool: str
    query: str
    k: int = Field(ge=1)
    method: str = "knn"
    order: str = "similarity"
    budget_tokens: int | None = None
    model: str = Field("cl100k_base", description="Target model whose tokenizer counts tokens.")
    instruction: str | None = None


class DemonstrationItem(BaseModel):
    id: str
    text: str
    label: str | None = None
    output: str | None = None
    score: float


class DemonstrationsResponse(BaseModel):
    method: str
    order: str | None
    demonstrations: list[DemonstrationItem]
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    tokens: int | None = None
    dropped: list[str] | None = None


def _records(items: list[PoolRecord]) -> list[Any]:
    return [demonstration(r.id, r.text, label=r.label, output=r.output) for r in items]


def _describe(name: str, store: PoolStore) -> PoolResponse:
    pool = store.get(name)
    return PoolResponse(name=name, size=len(pool), labels=pool.labels_, index=pool.index_.kind)


@router.post(
    "/v1/pools", response_model=PoolResponse, status_code=201, responses=error_responses(503)
)
def create_pool(body: CreatePoolRequest, store: Store) -> PoolResponse:
    """Create (or with ``replace`` overwrite) a named pool from records."""
    check_pool_name(body.name)
    store.create(body.name, _records(body.records), replace=body.replace)
    return _describe(body.name, store)


@router.post(
    "/v1/pools/{name}/records", response_model=PoolResponse, responses=error_responses(404)
)
def add_records(name: str, body: AddRecordsRequest, store: Store) -> PoolResponse:
    """Add records to a pool without rebuilding its index."""
    store.add(name, _records(body.records))
    return _describe(name, store)


@router.post(
    "/v1/demonstrations",
    response_model=DemonstrationsResponse,
    response_model_exclude_none=True,
    responses=error_responses(404, 503),  # an unknown pool; a scoring LM that is missing
)
def demonstrations(body: DemonstrationsRequest, store: Store, state: State) -> dict[str, Any]:
    """Retrieve, order and (with ``budget_tokens``) assemble demonstrations for a query."""
    limit = getattr(state.settings, "max_demonstrations", None)
    if limit is not None and body.k > limit:
        raise InputError(
            f"k is {body.k}; one request may ask for at most {limit} demonstrations "
            "(THRESHER_MAX_DEMONSTRATIONS).",
            field="k",
        )
    pool = store.get(body.pool)
    provider = state.provider
    found = demonstrate(
        pool,
        body.query,
        body.k,
        method=body.method,
        order=body.order,
        budget_tokens=body.budget_tokens,
        counter=(
            client_counter(provider, body.model, "model")
            if body.budget_tokens is not None
            else None
        ),
        scorer=lambda: provider.scorer(state.settings.scorer_model),
        instruction=body.instruction,
        retriever=store.retriever(body.pool, body.method),
    )
    return found.to_dict()
