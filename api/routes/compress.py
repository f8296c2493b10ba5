"""``POST /v1/compress``: LLMLingua-family prompt compression over the loaded scorer (or, for
``llmlingua2``, the loaded token classifier and embedder).

A request gets what a proxied one gets: it runs on Thresher's pool in its tenant's line and takes
a compression slot (api/work.py, api/compression_service.py), under a deadline counted from its
arrival (``deadline_ms``, default ``THRESHER_COMPRESS_DEADLINE_MS``) and the size cap of one
request (``THRESHER_COMPRESS_MAX_NEW_TOKENS``: 422); a client that leaves stops the work at the
next model call. When the deadline passes first the answer is the prompt unchanged, with a note
saying so, as the proxy forwards a request unchanged: the client gets a usable answer on time.

``model`` names a classifier this deployment offers, never a path of the server's choosing, and
an answer about it names no path and lists no folder.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from thresher.api.errors import error_responses
from thresher.api.state import AppState, State, Tenant, client_counter
from thresher.compression import (
    DEFAULT_METHOD,
    CompressionResult,
    Compressor,
    load_compressor,
    method_class,
    method_names,
)
from thresher.core.errors import InputError
from thresher.core.models import ModelProvider
from thresher.core.record import message_text
from thresher.core.settings import Settings

router = APIRouter(tags=["compression"])
DEFAULT_TARGET_MODEL = "cl100k_base"
# Characters counted at a time when checking a request's size against the cap.
COUNT_PIECE = 65_536


def build_compressor(
    method: str,
    settings: Settings,
    provider: ModelProvider,
    counter: Any = None,
    model: str | None = None,
    stop: Any = None,
) -> Compressor:
    """The compressor ``method`` over the models the settings name
    (:func:`thresher.compression.load_compressor`), ``model`` being a token-classification
    folder for ``llmlingua2``. With ``stop`` (a
    :data:`thresher.api.compression_service.StopCheck`) every forward pass of the model first
    asks it (the same passes, so the same output)."""
    from thresher.api.compression_service import stoppable_model

    return load_compressor(
        method,
        provider,
        counter=counter or provider.token_counter(DEFAULT_TARGET_MODEL),
        scorer_model=settings.scorer_model,
        embedder_model=settings.embedder_model,
        classifier=model,
        wrap=None if stop is None else lambda wrapper, _kind: stoppable_model(wrapper, stop),
    )


def preload_compressors(state: AppState) -> None:
    """Load every method's models now (the provider keeps them), so no request waits for it."""
    for method in method_names():
        build_compressor(method, state.settings, state.provider)


def classifier_folder(settings: Any, name: str) -> str:
    """The folder of the token classifier ``model`` names: the embedded one, a name from
    ``compress_models``, or a folder under ``models_root`` named relative to it. Anything else,
    and a folder there that is not a two-label token classifier, is one 422 that names what is
    allowed and nothing of the disk (no path, listing or config value: nothing to probe)."""
    from thresher.core.catalog import DEFAULT_CLASSIFIER, token_classifier_folder

    if name == DEFAULT_CLASSIFIER:
        return name
    offered = sorted({DEFAULT_CLASSIFIER, *settings.compress_models})
    root = settings.models_root
    refusal = InputError(
        f"model {name!r} is not a token classifier of this deployment; use one of {offered}"
        + (" or a folder under the models root (THRESHER_MODELS_ROOT), named relative to it"
           if root is not None else "")  # fmt: skip
        + ".",
        field="model",
    )
    folder: Path
    if name in settings.compress_models:
        folder = Path(settings.compress_models[name])
    else:
        relative = PurePosixPath(name)
        if root is None or relative.is_absolute() or ".." in relative.parts or "\x00" in name:
            raise refusal
        top = Path(root).resolve()
        folder = (top / relative).resolve()
        if not folder.is_relative_to(top):  # a link out of the root
            raise refusal
    try:
        return str(token_classifier_folder(str(folder), "model"))
    except InputError:
        raise refusal from None


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
        description="llmlingua2 only: a token classifier this deployment offers (label 1 = "
        "keep): a name from THRESHER_COMPRESS_MODELS, or a folder under THRESHER_MODELS_ROOT "
        "named relative to it; default Thresher's embedded one.",
    )
    deadline_ms: float | None = Field(
        None,
        gt=0,
        description="If not done this long after the request arrived, the prompt comes back "
        "unchanged with a note (default THRESHER_COMPRESS_DEADLINE_MS).",
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
    # 429: this tenant's line is full; 503: a model or tokenizer is missing.
    responses=error_responses(429, 503),
)
async def compress(
    request: CompressRequest, state: State, tenant: Tenant, http: Request
) -> CompressResponse:
    from thresher.api.compression_service import deadline_check
    from thresher.api.lane import watch_disconnect

    if request.method not in method_names():
        raise InputError(
            f"Unknown compression method {request.method!r}; use one of {list(method_names())}.",
            field="method",
        )
    if request.context is None and request.messages is None:
        raise InputError(
            "Give context (a string or a list of strings) or messages.", field="context"
        )
    service, work = state.compression, state.work
    if service is None or work is None:
        raise RuntimeError("the service is not started (its lifespan builds the work pool)")
    arrived = http.scope.get("thresher.arrived") or time.monotonic()
    deadline_ms = request.deadline_ms or service.deadline_ms
    gone = threading.Event()
    stop = deadline_check(arrived, deadline_ms, gone.is_set)
    watcher = asyncio.create_task(watch_disconnect(http.receive, gone))
    from thresher.api.work import Busy

    try:
        result = await work.run(
            tenant,
            lambda _queued: _compress(state, request, tenant, stop),
            deadline=arrived + deadline_ms / 1000,
            cancelled=gone.is_set,
        )
    except Busy as exc:
        if exc.reason != "deadline":
            raise  # its line full (429), its client gone (499), the service stopping (503)
        result = _unchanged(request, f"the deadline of {deadline_ms:.0f} ms passed ({exc})")
    finally:
        watcher.cancel()
    return CompressResponse(**result.to_dict(), kept=result.kept_spans())


def _unchanged(request: CompressRequest, why: str) -> CompressionResult:
    """The prompt as it came, when no compression finished in time: assembled as a compressor
    would assemble it, its tokens not counted (0: counting a large prompt would hold the event
    loop)."""
    from thresher.compression.prompt import build_prompt

    prompt = build_prompt(
        request.context, instruction=request.instruction, question=request.question,
        messages=request.messages, policy=request.policy,  # type: ignore[arg-type]
        count=len,  # which messages a policy compresses does not change the text
    )  # fmt: skip
    return CompressionResult(
        text=prompt.text,
        origin_tokens=0,
        compressed_tokens=0,
        ratio=1.0,
        tokens=[p.text for p in prompt.parts],
        kept_mask=[True] * len(prompt.parts),
        messages=[dict(m) for m in prompt.messages] if prompt.messages is not None else None,
        method=request.method,
        note=f"returned unchanged: {why}; tokens not counted",
    )


def _compress(state: AppState, request: CompressRequest, tenant: str, stop: Any) -> Any:
    """The work of one request, on a worker of Thresher's pool."""
    from thresher.api.compression_service import CLIENT_GONE
    from thresher.api.work import Busy
    from thresher.compression.conversation import Stopped

    settings, provider, service = state.settings, state.provider, state.compression
    assert service is not None  # checked by the route
    counter = (
        client_counter(provider, request.target_model, "target_model")
        if request.target_model
        else None
    )
    classifier = (
        request.model is not None
        and method_class(request.method).model == "token-classifier"
    )
    model = classifier_folder(settings, request.model) if classifier else request.model
    compressor = build_compressor(request.method, settings, provider, counter, model, stop)
    _check_size(request, counter or provider.token_counter(DEFAULT_TARGET_MODEL), service, stop)
    try:
        with service.pool.slot(stop, tenant):
            result: CompressionResult = compressor.compress(
                request.context,
                instruction=request.instruction,
                question=request.question,
                messages=request.messages,
                rate=request.rate,
                target_tokens=request.target_tokens,
                policy=request.policy,  # type: ignore[arg-type]
            )
    except Stopped as exc:
        reason = "gone" if str(exc) == CLIENT_GONE else "deadline"
        raise Busy(f"{exc} before the work finished", reason=reason, started=True) from None
    return result


def _check_size(request: CompressRequest, counter: Any, service: Any, stop: Any) -> None:
    """One request compresses at most ``max_new_tokens`` tokens (the proxy's cap): past it a
    422 naming the field, before any model runs. Counted in pieces, so a huge text is refused
    as soon as the cap is passed (a piece's tokens may run one past the text's at each cut,
    which only errs toward the cap) and the count stops with the request."""
    if request.messages is not None:
        field = "messages"
        texts = [message_text(m) for m in request.messages if isinstance(m, dict)]
    else:
        field = "context"
        context = request.context
        texts = [context] if isinstance(context, str) else list(context or [])
    texts += [t for t in (request.question, request.instruction) if t]
    limit = service.max_new_tokens
    total = 0
    for text in texts:
        for start in range(0, len(text), COUNT_PIECE):
            total += counter.count(text[start : start + COUNT_PIECE])
            if total > limit:
                raise InputError(
                    f"{field} holds more than {limit} tokens, the most one request may "
                    "compress (THRESHER_COMPRESS_MAX_NEW_TOKENS); send less text or split it.",
                    field=field,
                )
            if stop() is not None:
                return  # the deadline or the client: the caller hears of it from the slot
