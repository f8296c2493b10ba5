"""What the lifespan builds once and routes receive through ``Depends``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from core.backends import ChatBackend
from core.models import ModelProvider
from core.settings import Settings

if TYPE_CHECKING:
    from api.jobs.store import JobStore
    from api.metrics import Metrics
    from api.pipeline import StageRegistry
    from api.proxy import RetryPolicy
    from api.routing import BackendRouter


@dataclass
class AppState:
    """Built once per app. Tests may pass the first three; the lifespan fills in the rest."""

    settings: Settings
    provider: ModelProvider
    backend: ChatBackend
    extras: dict[str, Any] = field(default_factory=dict)
    router: BackendRouter | None = None
    metrics: Metrics | None = None
    retry: RetryPolicy | None = None
    stages: StageRegistry | None = None
    jobs: JobStore | None = None


def get_state(request: Request) -> AppState:
    return request.app.state.thresher  # type: ignore[no-any-return]


State = Annotated[AppState, Depends(get_state)]
