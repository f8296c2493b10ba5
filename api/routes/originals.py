"""``GET /v1/compress/originals/{handle}``: what compression elided behind a marker's handle.

Structure-aware compression replaces what it leaves out with a marker such as
``… 37 items elided [thr:ab12cd34] …`` (compression/elision.py); the service keeps the
original beside the message cache, under the tenant that sent it. Another tenant's handle, an
expired one and one never issued answer alike: 404.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from thresher.api.errors import error_responses
from thresher.api.state import State, Tenant
from thresher.compression.elision import originals_key, parse_handle
from thresher.core.errors import InputError, NotFoundError

router = APIRouter(tags=["compression"])


class OriginalResponse(BaseModel):
    """One elided span as it was before compression."""

    handle: str = Field(description="The handle, as in the marker: thr: and 8 hex digits.")
    kind: Literal["items", "entries", "chars", "lines"] = Field(
        description="What was elided: array items, object entries, the tail of a string, or "
        "lines of code."
    )
    where: str = Field(
        description="Where it was: a JSON path with the index range ($.results[13:50]; "
        "entries as {13:50}; a string's tail as [600:]) or a line range of code."
    )
    content: str = Field(
        description="The original: JSON text of the items or entries (an array or object), "
        "the string's tail, or the lines."
    )


@router.get(
    "/v1/compress/originals/{handle}",
    response_model=OriginalResponse,
    responses=error_responses(404),
)
async def original(handle: str, state: State, tenant: Tenant) -> OriginalResponse:
    """The original of an elided span, for the tenant whose request elided it."""
    parsed = parse_handle(handle)
    if parsed is None:
        raise InputError(
            f"handle {handle[:40]!r} is not a handle; give the thr:xxxxxxxx of a marker such "
            "as '… 37 items elided [thr:ab12cd34] …'.",
            field="handle",
        )
    store = state.compression.originals if state.compression is not None else None
    found = store.get(originals_key(tenant, parsed)) if store is not None else None
    if found is None:
        raise NotFoundError(
            f"No original is kept for {parsed} (unknown, expired, or another tenant's).",
            field="handle",
        )
    return OriginalResponse(**found)
