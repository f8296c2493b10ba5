"""``GET /v1/audit``: what audit mode found on the caller's traffic (docs/fleet.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from thresher.api.errors import error_responses
from thresher.api.state import State, Tenant

router = APIRouter(tags=["monitoring"])


class AuditResponse(BaseModel):
    """The audit report of one tenant, in this replica."""

    enabled: bool = Field(description="Whether any route is in audit mode.")
    routes: dict[str, float] = Field(description="Audited share of requests by route.")
    rows: list[dict[str, Any]] = Field(
        description="Per route, method and rate: samples, prompt tokens before and after, "
        "output tokens of the original and compressed answers, their agreement and price."
    )
    paid_at: dict[str, float] = Field(
        description="Per route/method: the rate that saved the most among those that paid "
        "(a positive total saving with enough agreeing answers)."
    )
    pending: int = Field(0, description="Audits still running.")


@router.get("/v1/audit", response_model=AuditResponse, responses=error_responses())
async def audit_report(state: State, tenant: Tenant) -> AuditResponse:
    """Saved tokens and money, output-length change and answer agreement per route, method
    and rate, for the caller's own requests."""
    auditor = state.audit
    if auditor is None:
        return AuditResponse(enabled=False, routes={}, rows=[], paid_at={})
    found = auditor.report(tenant)
    shares = {**({"*": auditor.default} if auditor.default > 0 else {}), **auditor.routes}
    return AuditResponse(enabled=True, routes=shares, **found)
