"""``POST /v1/compress``: LLMLingua-family prompt compression over the loaded scorer (or, for
``llmlingua2``, the loaded token classifier and embedder)."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from thresher.api.errors import error_responses
from thresher.api.state import AppState, State, client_counter
from thresher.compression import DEFAULT_METHOD, Compressor, load_compressor, method_names
from thresher.core.errors import InputError
from thresher.core.models import ModelProvider
from thresher.core.settings import Settings

router = APIRouter(tags=["compression"])
DEFAULT_TARGET_MODEL = "cl100k_base"


def build_compressor(
    method: str,
    settings: Settings,
    provider: ModelProvider,
    counter: Any = None,
    model: str | None = None,
) -> Compressor:
    """The compressor ``method`` over the models the settings name
    (:func:`thresher.compression.load_compressor`), ``model`` being a token-classification
    folder for ``llmlingua2``."""
    return load_compressor(
        method,
        provider,
        counter=counter or provider.token_counter(DEFAULT_TARGET_MODEL),
        scorer_model=settings.scorer_model,
        embedder_model=settings.embedder_model,
        classifier=model,
    )


_BUILD = threading.Lock()


def compressors(state: AppState) -> dict[str, Compressor]:
    """The state's compressors, built once on first use (or by the lifespan when preloading)."""
    return {n: compressor_for(state, n) for n in method_names()}


def compressor_for(state: AppState, method: str) -> Compressor:
    """One method's compressor, built on first use: a request for ``llmlingua2`` loads the
    classifier without the scoring LM."""
    with _BUILD:
        if state.compressors is None:
            state.compressors = {}
        built = state.compressors
        if method not in built:
            built[method] = build_compressor(method, state.settings, state.provider)
    return built[method]


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
    model: str | None = Field(
        None,
        description="llmlingua2 only: a Hugging Face token-classification folder (label 1 = "
        "keep), e.g. a downloaded llmlingua-2 checkpoint; default Thresher's embedded one.",
    )


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
    if request.method not in method_names():
        raise InputError(
            f"Unknown compression method {request.method!r}; use one of {list(method_names())}.",
            field="method",
        )
    if request.model is not None or request.target_model:
        counter = (
            client_counter(state.provider, request.target_model, "target_model")
            if request.target_model
            else None
        )
        compressor = build_compressor(
            request.method, state.settings, state.provider, counter, request.model
        )
    else:
        compressor = compressor_for(state, request.method)
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
