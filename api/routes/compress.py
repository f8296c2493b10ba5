"""``POST /v1/compress``: LLMLingua-family prompt compression over the loaded scorer."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.errors import error_responses
from api.state import AppState, State, client_counter
from compression import DEFAULT_METHOD, Compressor, get_compressor, method_names
from core.errors import InputError
from core.models import ModelProvider
from core.settings import Settings

router = APIRouter(tags=["compression"])
DEFAULT_TARGET_MODEL = "cl100k_base"


def compression_scorer(provider: ModelProvider, settings: Settings) -> Any:
    """The scoring LM for compression (:meth:`core.models.ModelProvider.compression_scorer`:
    one dtype policy for the proxy, this route and the CLI)."""
    return provider.compression_scorer(settings.scorer_model)


def build_compressors(settings: Settings, provider: ModelProvider) -> dict[str, Compressor]:
    """One compressor per method over one scorer and the default target tokenizer."""
    scorer = compression_scorer(provider, settings)
    counter = provider.token_counter(DEFAULT_TARGET_MODEL)
    return {n: get_compressor(n, scorer=scorer, counter=counter) for n in method_names()}


_BUILD = threading.Lock()


def compressors(state: AppState) -> dict[str, Compressor]:
    """The state's compressors, built once on first use (or by the lifespan when preloading)."""
    with _BUILD:
        if state.compressors is None:
            state.compressors = build_compressors(state.settings, state.provider)
    return state.compressors


class CompressRequest(BaseModel):
    """A prompt to compress: ``context`` (with ``instruction`` and ``question``) or ``messages``."""

    model_config = ConfigDict(extra="forbid")

    context: str | list[str] | None = None
    question: str | None = None
    instruction: str | None = None
    messages: list[dict[str, Any]] | None = None
    rate: float | None = Field(None, description="Fraction of tokens kept, in (0, 1].")
    target_tokens: int | None = None
    method: str = DEFAULT_METHOD
    target_model: str | None = Field(
        None, description="Model or tiktoken encoding whose tokens the rate is counted in."
    )
    policy: dict[str, str] | None = None


class CompressResponse(BaseModel):
    compressed: str
    origin_tokens: int
    compressed_tokens: int
    ratio: float
    method: str
    note: str | None = None
    messages: list[dict[str, Any]] | None = None
    # Pairs as two-item lists: FastAPI writes a tuple as a 3.0-style list of ``items``, which
    # is not a valid OpenAPI 3.1 schema.
    kept: list[Annotated[list[int], Field(min_length=2, max_length=2)]] = Field(
        description="[start, end) character ranges of the original prompt that were kept."
    )


@router.post(
    "/v1/compress",
    response_model=CompressResponse,
    response_model_exclude_none=True,
    responses=error_responses(503),  # the scoring LM or the target tokenizer is missing
)
def compress(request: CompressRequest, state: State) -> CompressResponse:
    built = compressors(state)
    if request.method not in built:
        raise InputError(
            f"Unknown compression method {request.method!r}; use one of {list(built)}.",
            field="method",
        )
    compressor = built[request.method]
    if request.target_model:
        counter = client_counter(state.provider, request.target_model, "target_model")
        compressor = get_compressor(
            request.method,
            scorer=compressor.scorer,
            counter=counter,  # type: ignore[attr-defined]
        )
    if request.context is None and request.messages is None:
        raise InputError(
            "Give context (a string or a list of strings) or messages.", field="context"
        )
    result = compressor.compress(
        request.context,
        instruction=request.instruction,
        question=request.question,
        messages=request.messages,
        rate=request.rate,
        target_tokens=request.target_tokens,
        policy=request.policy,  # type: ignore[arg-type]
    )
    return CompressResponse(**result.to_dict(), kept=result.kept_spans())
