"""``GET /metrics`` in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from thresher.api.state import State

router = APIRouter(tags=["monitoring"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: State) -> Response:
    """Requests, latency per route and per stage, tokens before/after and saved, backend errors."""
    assert state.metrics is not None  # built in the lifespan
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
