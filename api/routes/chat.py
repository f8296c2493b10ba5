"""The OpenAI-compatible proxy: ``/v1/chat/completions`` and ``/v1/completions``.

The body goes to the backend as sent, after the pipeline its ``thresher`` object configures;
the answer comes back in OpenAI's shape with a ``thresher`` report and ``x-thresher-*`` headers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api.errors import error_responses
from api.pipeline import (
    Kind,
    Pipeline,
    PipelineReport,
    RequestContext,
    ThresherOptions,
    merge_options,
)
from api.proxy import relay_sse
from api.state import AppState, State
from core.record import ROLES, validate_messages

router = APIRouter(tags=["proxy"])
# The answer to a client that left while its request was being prepared (nobody reads it).
GONE = {
    "error": {
        "message": "The client disconnected; the request was not forwarded.",
        "type": "client_closed_request",
        "param": None,
        "code": "client_disconnected",
    }
}

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


class AnswerResponse(JSONResponse):
    """The backend's answer rendered by orjson: the same compact UTF-8 JSON as Starlette's
    renderer, in a tenth of the time (the proxy's hot path)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


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


# What core.record.validate_messages checks, said in the spec (other message keys pass through).
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
    request: ChatCompletionRequest, state: State
) -> AnswerResponse | StreamingResponse:
    """Chat completion through the pipeline; ``stream: true`` answers with SSE."""
    return await forward(state, "chat", request)


@router.post("/v1/completions", responses=ANSWER, response_model=None)
async def completions(
    request: CompletionRequest, state: State
) -> AnswerResponse | StreamingResponse:
    """Text completion through the pipeline; ``stream: true`` answers with SSE."""
    return await forward(state, "completion", request)


async def forward(
    state: AppState,
    kind: Kind,
    request: ProxyRequest,
    cancelled: Callable[[], bool] | None = None,
    arrived: float | None = None,
) -> AnswerResponse | StreamingResponse:
    """Run the pipeline and forward; ``cancelled`` (the client is gone) stops the stages' work
    and nothing is forwarded; deadlines count from ``arrived`` (``time.monotonic()``, default
    now)."""
    assert state.router and state.metrics and state.retry and state.stages  # built in lifespan
    # exclude_unset: the body goes on as the client wrote it, explicit nulls included.
    body = request.model_dump(exclude_unset=True, exclude={"thresher"})
    route = state.router.resolve(request.model)
    if kind == "chat":
        validate_messages(body["messages"], field_name="messages")
    raw = request.thresher.model_dump(exclude_unset=True) if request.thresher else None
    options = merge_options(state.settings.pipeline, raw)  # type: ignore[attr-defined]
    ctx = RequestContext(
        kind, body, options, state.prompt_counter(route.tokenizer), route=request.model,
        cancelled=cancelled, arrived=arrived or time.monotonic(),
    )  # fmt: skip
    stages = state.stages.build(options, state)
    pipeline = Pipeline(stages, state.metrics.observe_stage)
    # Counting alone is fast; stages may load or run models, so they go to a thread.
    report: PipelineReport = (
        await asyncio.to_thread(pipeline.run, ctx) if stages else pipeline.run(ctx)
    )
    state.metrics.observe_report(report)
    if cancelled is not None and cancelled():
        return AnswerResponse(GONE, status_code=499)
    out = {**ctx.body, "model": route.upstream_model}
    backend, metrics = route.backend, state.metrics
    headers = report.headers()
    if request.stream:
        start = backend.stream_chat if kind == "chat" else backend.stream_complete
        sent = time.monotonic()
        first, rest = await state.retry.open_stream(backend.name, lambda: start(out), metrics)
        if state.compression is not None and stages:
            rest = _observed(rest, state.compression.prefill, request.model, sent)
        events = relay_sse(
            first, rest, backend=backend.name, metrics=metrics, extra={"thresher": report.as_dict()}
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    call = backend.chat if kind == "chat" else backend.complete
    sent = time.monotonic()
    answer = await state.retry.call(backend.name, lambda: call(out), metrics)
    if state.compression is not None and stages:  # what compressing saves on this route
        state.compression.prefill.observe(request.model, answer, time.monotonic() - sent)
    answer["thresher"] = report.as_dict()
    return AnswerResponse(answer, headers=headers)


async def _observed(
    rest: AsyncIterator[dict[str, Any]], prefill: Any, route: str, sent: float
) -> AsyncIterator[dict[str, Any]]:
    """The stream as it comes, telling ``prefill`` the usage or timings of its last chunk that
    has them (OpenAI's ``stream_options.include_usage``, llama.cpp's ``timings``)."""
    last: dict[str, Any] | None = None
    try:
        async for chunk in rest:
            if "usage" in chunk or "timings" in chunk:
                last = chunk
            yield chunk
    finally:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()
    if last is not None:
        prefill.observe(route, last, time.monotonic() - sent)
