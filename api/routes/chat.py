"""OpenAI-compatible chat pass-through: the request body goes to the backend unchanged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api.state import State
from core.errors import BackendError
from core.record import validate_messages

router = APIRouter(tags=["chat"])


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat request; fields not named here pass through to the backend untouched."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    owned_by: str = "thresher"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


@router.post("/v1/chat/completions")
async def chat_completions(request: ChatCompletionRequest, state: State) -> Any:
    body = request.model_dump(exclude_none=True)
    body.pop("thresher", None)
    validate_messages(body["messages"], field_name="messages")
    if request.stream:
        stream = state.backend.stream_chat(body)
        first = await anext(aiter(stream), None)  # fail before the 200 if the backend is down
        return StreamingResponse(_sse(first, stream), media_type="text/event-stream")
    return await state.backend.chat(body)


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: State) -> ModelList:
    return ModelList(data=[ModelCard(id=m) for m in await state.backend.models()])


async def _sse(first: dict | None, rest: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    try:
        if first is not None:
            yield f"data: {json.dumps(first)}\n\n".encode()
        async for chunk in rest:
            yield f"data: {json.dumps(chunk)}\n\n".encode()
    except BackendError as exc:
        # Headers are gone; the OpenAI clients read an error event in the stream.
        error = {
            "error": {
                "message": str(exc),
                "type": "api_error",
                "param": None,
                "code": "backend_error",
            }
        }
        yield f"data: {json.dumps(error)}\n\n".encode()
    yield b"data: [DONE]\n\n"
