"""The proxy's core: run a request through the pipeline, forward it, relay the answer.

Retries belong to the backend layer (core/retry.py: never a second copy of a generation that
may have started; a stream only until its first event). Here, a stream whose backend fails
after the first event ends with an error event: the headers and part of the answer are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi.responses import JSONResponse, StreamingResponse

from thresher.api.audit import AuditJob
from thresher.api.expand import Expander, expandable
from thresher.api.metrics import Metrics
from thresher.api.pipeline import (
    Kind,
    Pipeline,
    PipelineReport,
    RequestContext,
    ThresherOptions,
    merge_options,
)
from thresher.api.state import ANONYMOUS_TENANT
from thresher.api.work import Busy
from thresher.core.errors import BackendError
from thresher.core.record import validate_messages
from thresher.core.retry import error_kind

if TYPE_CHECKING:
    from thresher.api.compression_service import CompressionService
    from thresher.api.state import AppState

log = logging.getLogger(__name__)
Body = dict[str, Any]
# The answer to a client that left while its request was being prepared (nobody reads it).
GONE = {
    "error": {
        "message": "The client disconnected; the request was not forwarded.",
        "type": "client_closed_request",
        "param": None,
        "code": "client_disconnected",
    }
}
# The answer to a client that left while the backend was answering (nobody reads it either).
GONE_ANSWERING = {
    "error": {**GONE["error"], "message": "The client disconnected; the backend call was stopped."}
}
# How often a backend call checks that its client is still there.
GONE_POLL_S = 0.25


class AnswerResponse(JSONResponse):
    """The backend's answer rendered by orjson: the same compact UTF-8 JSON as Starlette's
    renderer, in a tenth of the time (the proxy's hot path)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def forward(
    state: AppState,
    kind: Kind,
    request: Any,
    cancelled: Callable[[], bool] | None = None,
    arrived: float | None = None,
    tenant: str = ANONYMOUS_TENANT,
) -> AnswerResponse | StreamingResponse:
    """One proxied request (a validated ``thresher.api.routes.chat.ProxyRequest``) end to end.

    ``cancelled`` (the client is gone) stops the stages' work and nothing is forwarded;
    deadlines count from ``arrived`` (``time.monotonic()``, default now); what the request
    stores belongs to ``tenant``. A route in audit mode (api/audit.py) is forwarded unchanged,
    and a sampled request audited once answered."""
    router, metrics, stages, services = state.router, state.metrics, state.stages, state.services
    if router is None or metrics is None or stages is None or services is None:
        raise RuntimeError("the service is not started (its lifespan builds router and stages)")
    # exclude_unset: the body goes on as the client wrote it, explicit nulls included.
    body = request.model_dump(exclude_unset=True, exclude={"thresher"})
    route = router.resolve(request.model)
    if kind == "chat":
        validate_messages(body["messages"], field_name="messages")
    raw = request.thresher.model_dump(exclude_unset=True) if request.thresher else None
    options = merge_options(state.settings.pipeline, raw)  # type: ignore[attr-defined]
    ctx = RequestContext(
        kind, body, options, state.prompt_counter(route.tokenizer), route=request.model,
        cancelled=cancelled, arrived=arrived or time.monotonic(), tenant=tenant,
    )  # fmt: skip
    built = stages.build(options, services)  # options that cannot hold are a 4xx, audited or not
    auditor, audit_rate = state.audit, None
    if auditor is not None and auditor.covers(request.model):
        audit_rate = auditor.sample(request.model)
        built = []
    pipeline = Pipeline(built, metrics.observe_stage)
    # Counting alone is fast; stages may load or run models, so they go to Thresher's pool.
    if built:
        report, ctx = await _run_stages(state, pipeline, ctx)
    else:
        report = pipeline.run(ctx)
    metrics.observe_report(report)
    if cancelled is not None and cancelled():
        return AnswerResponse(GONE, status_code=499)
    out = {**ctx.body, "model": route.upstream_model}
    backend = route.backend
    headers = report.headers()
    if state.prices is not None and state.settings.money:  # type: ignore[attr-defined]
        saved_usd(state, metrics, route, report, headers)
    # What compressing saves on this route is learned from the backend's usage and timings.
    learn = Learner(state.compression, request.model, report, built) if built else None
    audit = None
    if audit_rate is not None:
        headers["x-thresher-audit"] = f"sampled; rate={audit_rate:g}"

        def audit(answer: Body) -> None:
            job = AuditJob(tenant, kind, request.model, body, options, audit_rate, answer)
            auditor.submit(job, state)  # type: ignore[union-attr]

    expander = _expander(state, kind, options, ctx.tenant, out)
    sent = time.monotonic()
    if request.stream:
        if expander is not None:
            stream = expander.stream(backend, out)
        else:
            stream = (backend.stream_chat if kind == "chat" else backend.stream_complete)(out)
        if learn is not None or audit is not None:
            stream = _observed(stream, kind, sent, learn, audit)
        first = await anext(aiter(stream), None)  # a failure before it is a plain error answer
        events = relay_sse(
            first, stream, backend=backend.name, metrics=metrics,
            extra={"thresher": report.as_dict()},
        )  # fmt: skip
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    if expander is not None:
        call = expander.chat(backend, out)
    else:
        call = (backend.chat if kind == "chat" else backend.complete)(out)
    answer = await unless_gone(call, cancelled)
    if answer is None:
        return AnswerResponse(GONE_ANSWERING, status_code=499)
    if learn is not None:
        learn(answer, time.monotonic() - sent)
    answer["thresher"] = report.as_dict()
    if expander is not None:
        answer["thresher"]["expanded"] = expander.expanded
    response = AnswerResponse(answer, headers=headers)
    if audit is not None:
        audit(answer)  # starts in the background; the answer above is already rendered
    return response


async def unless_gone(
    call: Awaitable[Body], cancelled: Callable[[], bool] | None, poll_s: float = GONE_POLL_S
) -> Body | None:
    """The backend's answer, or None once the client has gone: the call is then cancelled, so
    a remote backend sees its connection close and the local model stops generating, rather
    than answering for minutes to nobody while everyone else waits behind it."""
    if cancelled is None:
        return await call
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if cancelled():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                return None
    finally:
        if not task.done():
            task.cancel()


class Learner:
    """What an answer teaches the compression service about its route: prefill (and decode)
    time per token, and (when the compression stage ran) output length by kept share."""

    def __init__(
        self, service: CompressionService | None, route: str, report: PipelineReport,
        built: list[Any],
    ) -> None:  # fmt: skip
        self.service = service
        self.route = route
        self.kept = report.tokens_after / report.tokens_before if report.tokens_before else 1.0
        self.output = any(s.name == "compression" for s in built)

    def __call__(self, answer: Body, elapsed_s: float) -> None:
        if self.service is None:
            return
        self.service.prefill.observe(self.route, answer, elapsed_s)
        usage = answer.get("usage")
        done = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if self.output and isinstance(done, int):
            self.service.gate.output.observe(self.route, self.kept, done)


def saved_usd(
    state: AppState, metrics: Metrics, route: Any, report: PipelineReport, headers: dict[str, str]
) -> None:
    """``x-thresher-saved-usd``: the input price of the prompt tokens the pipeline removed (the
    output side is measured by audit mode), and the counter of it."""
    prices = state.prices
    assert prices is not None
    names = (route.model, route.upstream_model)
    before = prices.cost(names, report.tokens_before)
    if before is None:
        return
    usd = before - (prices.cost(names, report.tokens_after) or 0.0)
    headers["x-thresher-saved-usd"] = f"{usd:.8f}"
    metrics.observe_saved_usd(route.model, usd)


def stages_deadline_ms(options: ThresherOptions, default_ms: float) -> float:
    """How long after its arrival a request's stages may run: the compression options'
    ``deadline_ms``, else the deployment's (``compress_deadline_ms``)."""
    asked = options.compression.deadline_ms if options.compression is not None else None
    return asked or default_ms


async def _run_stages(
    state: AppState, pipeline: Pipeline, ctx: RequestContext
) -> tuple[PipelineReport, RequestContext]:
    """The stages on Thresher's pool, in ``ctx.tenant``'s line, under the request's deadline.

    The work changes a copy of the request (made on the worker, not on the event loop), so
    when the deadline passes (or the client leaves) first, ``ctx`` itself is still the request
    to forward unchanged, whatever the abandoned work is doing (it stops at its own check)."""
    work, service = state.work, state.compression
    if work is None or service is None:
        raise RuntimeError("the service is not started (its lifespan builds the work pool)")
    pipeline.check(ctx)  # a caller's mistake is a 4xx even when no worker is free in time
    deadline = ctx.arrived + stages_deadline_ms(ctx.options, service.deadline_ms) / 1000

    def run(queued: float) -> tuple[PipelineReport, RequestContext]:
        mine = dataclasses.replace(ctx, body=copy.deepcopy(ctx.body), headers={})
        return pipeline.run(mine, queued_s=queued, original=ctx.body), mine

    queued = time.monotonic()
    try:
        return await work.run(ctx.tenant, run, deadline=deadline, cancelled=ctx.cancelled)
    except Busy as exc:
        spent = time.monotonic() - queued
        return pipeline.skipped(ctx, f"skipped: {exc}", exc.waited, spent), ctx


def _expander(
    state: AppState, kind: Kind, options: Any, tenant: str, body: Body
) -> Expander | None:
    """The thresher_expand loop when the request opted in and forwards elision markers."""
    compression = options.compression
    if kind != "chat" or compression is None or not compression.expand:
        return None
    if state.compression is None or not expandable(body):
        return None
    rounds = state.settings.compress_expand_rounds  # type: ignore[attr-defined]
    return Expander(state.compression.originals, tenant, rounds)


async def _observed(
    rest: AsyncIterator[Body],
    kind: Kind,
    sent: float,
    learn: Learner | None,
    audit: Callable[[Body], None] | None,
) -> AsyncIterator[Body]:
    """The stream as it comes, telling ``learn`` the usage or timings of its last chunk that
    has them (OpenAI's ``stream_options.include_usage``, llama.cpp's ``timings``) and, once it
    has ended whole, ``audit`` the answer it streamed (text and usage)."""
    last: Body | None = None
    text: list[str] = []
    try:
        async for chunk in rest:
            if "usage" in chunk or "timings" in chunk:
                last = chunk
            if audit is not None:
                text.append(_delta(kind, chunk))
            yield chunk
    finally:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()
    if last is not None and learn is not None:
        learn(last, time.monotonic() - sent)
    if audit is not None:
        content = "".join(text)
        choice = {"message": {"role": "assistant", "content": content}, "text": content}
        audit({"choices": [choice], "usage": (last or {}).get("usage")})


def _delta(kind: Kind, chunk: Body) -> str:
    choices = chunk.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    if kind == "chat":
        delta = first.get("delta") or {}
        piece = delta.get("content") if isinstance(delta, dict) else None
    else:
        piece = first.get("text")
    return piece if isinstance(piece, str) else ""


async def relay_sse(
    first: Body | None,
    rest: AsyncIterator[Body],
    *,
    backend: str,
    metrics: Metrics,
    extra: Body | None = None,
) -> AsyncIterator[bytes]:
    """Server-sent events in OpenAI's framing; ``extra`` rides on the first chunk."""
    try:
        if first is not None:
            if extra:
                first = {**first, **extra}
            yield _event(first)
        async for chunk in rest:
            yield _event(chunk)
    except BackendError as exc:
        # Headers are gone: the OpenAI clients raise on an error event inside the stream.
        metrics.backend_error(backend, error_kind(exc))
        log.warning("backend %s broke off a stream: %s", backend, exc)
        error = {
            "error": {
                "message": "The backend broke off: the stream was cut short. Do not retry "
                "blindly, part of the answer was already sent.",
                "type": "api_error",
                "param": None,
                "code": "backend_stream_broken",
            }
        }
        yield _event(error)
    finally:
        close = getattr(rest, "aclose", None)
        if close is not None:
            await close()
    yield b"data: [DONE]\n\n"


def _event(data: Body) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
