"""The OpenAI-compatible proxy: ``/v1/chat/completions`` and ``/v1/completions``.

The body goes to the backend as sent, after the pipeline its ``thresher`` object configures;
the answer comes back in OpenAI's shape with a ``thresher`` report and ``x-thresher-*`` headers.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from thresher.api.errors import error_responses
from thresher.api.pipeline import ThresherOptions
from thresher.api.proxy import AnswerResponse, forward
from thresher.api.state import State, Tenant
from thresher.core.record import ROLES

router = APIRouter(tags=["proxy"])

# 404: an unknown model; 503: the local model is missing (the rest: api/openapi.py).
ERRORS = error_responses(404, 502, 503, 504)
ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The backend's answer in OpenAI's shape, with a ``thresher`` report; "
        "with ``stream: true``, server-sent events ending in ``data: [DONE]``.",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            # Each event's data is one JSON chunk (or an error object), then "[DONE]".
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"type": "string"}},
                }
            },
        },
    },
    **ERRORS,
}


class ProxyRequest(BaseModel):
    """Fields every proxied request has; the rest pass through to the backend untouched."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    thresher: ThresherOptions | None = Field(
        None, description="Thresher's request pipeline (the OpenAI SDK's extra_body)."
    )


# What thresher.core.record.validate_messages checks, said in the spec (other message keys pass
# through).
MESSAGE_SCHEMA = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": {"enum": sorted(ROLES)}},
    "anyOf": [
        {"required": ["content"], "properties": {"content": {"type": ["string", "array"]}}},
        {
            "required": ["tool_calls"],
            "properties": {"tool_calls": {"type": "array", "minItems": 1}},
        },
        {
            "required": ["function_call"],
            "properties": {"function_call": {"type": "object", "minProperties": 1}},
        },
    ],
}


class ChatCompletionRequest(ProxyRequest):
    """The OpenAI chat completion request."""

    messages: list[dict[str, Any]] = Field(
        min_length=1, json_schema_extra={"items": MESSAGE_SCHEMA}
    )


class CompletionRequest(ProxyRequest):
    """The OpenAI (legacy) completion request."""

    prompt: str | list[str] | list[int] | list[list[int]]


@router.post("/v1/chat/completions", responses=ANSWER, response_model=None)
async def chat_completions(
    request: ChatCompletionRequest, state: State, tenant: Tenant
) -> AnswerResponse | StreamingResponse:
    """Chat completion through the pipeline; ``stream: true`` answers with SSE."""
    return await forward(state, "chat", request, tenant=tenant)


@router.post("/v1/completions", responses=ANSWER, response_model=None)
async def completions(
    request: CompletionRequest, state: State, tenant: Tenant
) -> AnswerResponse | StreamingResponse:
    """Text completion through the pipeline; ``stream: true`` answers with SSE."""
    return await forward(state, "completion", request, tenant=tenant)
