"""What the lifespan builds once and routes receive through ``Depends``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from core.backends import ChatBackend
from core.models import ModelProvider
from core.settings import Settings


@dataclass
class AppState:
    settings: Settings
    provider: ModelProvider
    backend: ChatBackend
    extras: dict[str, Any] = field(default_factory=dict)


def get_state(request: Request) -> AppState:
    return request.app.state.thresher  # type: ignore[no-any-return]


State = Annotated[AppState, Depends(get_state)]
