"""The stages of the request pipeline, in order, as the service builds them per request."""

from __future__ import annotations

from api.pipeline import StageRegistry, unavailable


def default_stages() -> StageRegistry:
    """retrieve + order (demonstrations) -> fit the budget -> compress."""
    registry = StageRegistry()
    registry.register("demonstrations", unavailable("demonstrations", "prompting"))
    registry.register("compression", unavailable("compression", "compression"))
    return registry
