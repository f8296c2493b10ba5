"""The request-time pipeline: retrieve -> order -> fit one token budget -> compress -> forward.

Each stage is optional and timed. A caller's mistake (an unknown method or pool) is caught when
the stage is built or checked, before anything runs, and answered with a 4xx; once running, a
stage fails open: whatever it raises, the original request goes to the backend unchanged and the
report says which stage failed and why.

The stages run on Thresher's own pool (api/work.py) under the request's deadline, counted from
its arrival: the time a request waited for a worker is reported (``queue_ms``) and counted in
the first stage's time, and a request whose deadline passes first goes on unchanged
(:meth:`Pipeline.skipped`).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from thresher.api.state import ANONYMOUS_TENANT
from thresher.compression import DEFAULT_METHOD
from thresher.core.errors import InputError, ThresherError
from thresher.core.record import message_text
from thresher.core.tokens import TokenCounter

if TYPE_CHECKING:
    from thresher.api.compression_service import CompressionService
    from thresher.api.routing import BackendRouter
    from thresher.api.settings import ServiceSettings
    from thresher.api.state import TenantPools
    from thresher.core.models import ModelProvider

log = logging.getLogger(__name__)
Kind = Literal["chat", "completion"]


class DemonstrationOptions(BaseModel):
    """Few-shot demonstrations retrieved from a named pool and placed before the query."""

    model_config = ConfigDict(extra="forbid")

    pool: str = Field(min_length=1)
    k: int = Field(4, ge=1, le=64)
    method: str = "knn"
    order: str | None = None


class CompressionOptions(BaseModel):
    """Prompt compression: keep ``rate`` of the tokens, or at most ``target_tokens``."""

    # The spec says what the validator does: the two targets exclude each other.
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"not": {"required": ["rate", "target_tokens"]}}
    )

    method: str = DEFAULT_METHOD
    rate: float | None = Field(None, gt=0, le=1)
    target_tokens: int | None = Field(None, ge=1)
    protect: list[str] = Field(default_factory=list)
    # Skip when the learned time estimate exceeds this (overrides the deployment budget).
    max_latency_ms: float | None = Field(None, gt=0)
    # Indices of messages forwarded verbatim (negative counts from the end).
    keep: list[int] = Field(default_factory=list)
    # Stop compressing this long after the request arrived (default: the deployment's).
    deadline_ms: float | None = Field(None, gt=0)
    # "pays": skip when the predicted prefill saving is below the predicted compression time.
    when: Literal["pays", "always"] = "pays"
    # Offer the backend model a thresher_expand tool for the spans compression elided; the
    # proxy answers its calls itself (api/expand.py, docs/content.md).
    expand: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> CompressionOptions:
        if {"rate", "target_tokens"} <= self.model_fields_set:
            raise ValueError("give either rate or target_tokens, not both")
        return self


class ThresherOptions(BaseModel):
    """The ``thresher`` object of a proxied request (the OpenAI SDK's ``extra_body``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)  # NO_OPTIONS is shared

    demonstrations: DemonstrationOptions | None = None
    compression: CompressionOptions | None = None
    budget_tokens: int | None = Field(None, ge=1)


def merge_options(defaults: dict[str, Any], request: dict[str, Any] | None) -> ThresherOptions:
    """Deployment defaults overlaid by the request; a request ``null`` switches a stage off."""
    if not defaults and not request:
        return NO_OPTIONS  # the plain proxy's case: nothing to merge or validate
    merged = deep_merge(defaults, request or {})
    try:
        return ThresherOptions.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("thresher", *first.get("loc", ())))
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        raise InputError(f"{where}: {message}", field=where) from None


NO_OPTIONS = ThresherOptions()


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` overlaid by ``over``, nested objects merged key by key; a ``None`` in ``over``
    removes the key (a request's ``null`` switches a stage off). Neither input is changed."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class StageReport:
    """What one stage did: ``ran``, ``skipped`` (with the reason) or ``failed`` (fail open)."""

    name: str
    status: Literal["ran", "skipped", "failed"]
    ms: float = 0.0
    detail: str = ""


@dataclass
class PipelineReport:
    """Tokens before and after and time per stage; returned in the body and in headers."""

    tokens_before: int = 0
    tokens_after: int = 0
    counter: str = ""
    stages: list[StageReport] = field(default_factory=list)
    failed: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    # Milliseconds the request waited for a worker before its first stage (in that stage's ms).
    queue_ms: float = 0.0

    @property
    def saved(self) -> int:
        return self.tokens_before - self.tokens_after

    def as_dict(self) -> dict[str, Any]:
        return {
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "saved_tokens": self.saved,
            "counter": self.counter,
            "stages": [s.__dict__ for s in self.stages],
            "failed_stage": self.failed,
            "queue_ms": round(self.queue_ms, 1),
        }

    def headers(self) -> dict[str, str]:
        headers = {
            "x-thresher-tokens-before": str(self.tokens_before),
            "x-thresher-tokens-after": str(self.tokens_after),
            "x-thresher-saved-tokens": str(self.saved),
        }
        if self.stages:
            headers["x-thresher-stages"] = ", ".join(
                f"{s.name};status={s.status};ms={s.ms:.1f}" for s in self.stages
            )
            headers["x-thresher-queue-ms"] = f"{self.queue_ms:.1f}"
        if self.failed:
            headers["x-thresher-failed-stage"] = self.failed
            headers["x-thresher-fail-open"] = "original request forwarded"
            why = next((s.detail for s in self.stages if s.name == self.failed), "")
            headers["x-thresher-fail-reason"] = header_value(why)
        headers.update(self.extra_headers)
        return headers


def header_value(text: str, limit: int = 300) -> str:
    """``text`` as one header line: printable ASCII, no line breaks, at most ``limit`` chars."""
    flat = " ".join(text.split())
    return flat.encode("ascii", "replace").decode("ascii")[:limit]


@dataclass
class Retrieved:
    """Demonstrations found for a request (a ``thresher.prompting.RetrievalResult``) and the
    template that writes them (``classification`` for labelled pools, else ``generation``)."""

    result: Any
    template: str


@dataclass
class RequestContext:
    """What stages read and change. ``body`` is what will be forwarded."""

    kind: Kind
    body: dict[str, Any]
    options: ThresherOptions
    counter: TokenCounter
    # Retrieved, ordered demonstrations waiting to be placed by the budget stage.
    demonstrations: Retrieved | None = None
    # Tokens the compressible text may use after the budget stage; None = no budget.
    text_budget: int | None = None
    # The route's public model name (cost models are learned per route).
    route: str = ""
    # True once the client has gone: stages stop their work.
    cancelled: Callable[[], bool] | None = None
    # When the request arrived (time.monotonic()): deadlines count from here.
    arrived: float = field(default_factory=time.monotonic)
    # Whom what the request stores belongs to (api/state.py tenant_of).
    tenant: str = ANONYMOUS_TENANT
    # x-thresher-* headers a stage adds to the answer.
    headers: dict[str, str] = field(default_factory=dict)

    def prompt_tokens(self) -> int:
        return count_prompt(self.kind, self.body, self.counter)


class Stage(Protocol):
    """One optional step of the request pipeline; ``run`` may block (it runs in a thread).
    A stage may also have ``check(ctx)``, called before any stage runs: it raises
    :class:`InputError` for options that cannot hold for this request (a 4xx)."""

    name: str

    def skip_reason(self, ctx: RequestContext) -> str | None: ...

    def run(self, ctx: RequestContext) -> None: ...


def count_prompt(kind: Kind, body: dict[str, Any], counter: TokenCounter) -> int:
    """Prompt tokens as ``counter`` counts the text a backend will read (message contents)."""
    if kind == "chat":
        return sum(counter.count(message_text(m)) for m in body.get("messages", []))
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        return sum(counter.count(p) for p in prompt if isinstance(p, str))
    return counter.count(prompt) if isinstance(prompt, str) else 0


StageObserver = Callable[[StageReport], None]


class Pipeline:
    """Runs stages in order over a context; timing each, failing open.

    Args:
        stages: The stages configured for this request, in pipeline order.
        observe: Called with each stage's report (the service feeds its metrics with it).
    """

    def __init__(self, stages: list[Stage], observe: StageObserver | None = None) -> None:
        self.stages = stages
        self.observe = observe

    def check(self, ctx: RequestContext) -> None:
        """Every stage's ``check``: options that cannot hold raise :class:`InputError`."""
        for stage in self.stages:
            check = getattr(stage, "check", None)
            if check is not None:
                check(ctx)

    def run(
        self,
        ctx: RequestContext,
        *,
        queued_s: float = 0.0,
        original: dict[str, Any] | None = None,
    ) -> PipelineReport:
        """Run the stages over ``ctx`` (checked first, see :meth:`check`).

        Args:
            ctx: The request; its body is changed in place.
            queued_s: Seconds the request waited for a worker (reported, and counted in the
                first stage's time).
            original: A copy of the body to forward when a stage fails (made here if absent).
        """
        report = PipelineReport(counter=getattr(ctx.counter, "name", type(ctx.counter).__name__))
        report.tokens_before = ctx.prompt_tokens()
        report.queue_ms = queued_s * 1000
        # Only stages change the body; a pass-through pays no copy.
        if original is None:
            original = copy.deepcopy(ctx.body) if self.stages else ctx.body
        self.check(ctx)
        waited = report.queue_ms
        for stage in self.stages:
            reason = stage.skip_reason(ctx)
            if reason is not None:
                self._record(report, StageReport(stage.name, "skipped", waited, reason))
                waited = 0.0
                continue
            start = time.perf_counter()
            try:
                stage.run(ctx)
            except Exception as exc:  # noqa: BLE001 - any failure forwards the original
                log.exception("pipeline stage %s failed; forwarding the original", stage.name)
                ms = (time.perf_counter() - start) * 1000 + waited
                detail = _failure(exc)
                self._record(report, StageReport(stage.name, "failed", ms, detail))
                report.failed = stage.name
                ctx.body = original
                break
            ms = (time.perf_counter() - start) * 1000 + waited
            waited = 0.0
            self._record(report, StageReport(stage.name, "ran", ms, getattr(stage, "detail", "")))
        ran = any(s.status == "ran" for s in report.stages)
        report.tokens_after = ctx.prompt_tokens() if ran else report.tokens_before
        report.extra_headers = dict(ctx.headers)
        return report

    def skipped(
        self, ctx: RequestContext, reason: str, waited_s: float, spent_s: float
    ) -> PipelineReport:
        """The report of a request whose stages did not finish in time (no worker free, the
        deadline or the client gone first): every stage skipped for ``reason``, the first one's
        time ``spent_s`` (the wait for a worker, ``waited_s``, and any work dropped); ``ctx``
        holds the body to forward unchanged. Its tokens are not counted (0): counting a large
        body would hold the event loop, which is what the pool keeps it from."""
        report = PipelineReport(counter=getattr(ctx.counter, "name", type(ctx.counter).__name__))
        report.queue_ms = waited_s * 1000
        spent = spent_s * 1000
        for stage in self.stages:
            self._record(report, StageReport(stage.name, "skipped", spent, reason))
            spent = 0.0
        return report

    def _record(self, report: PipelineReport, stage: StageReport) -> None:
        report.stages.append(stage)
        if self.observe is not None:
            self.observe(stage)


def _failure(exc: Exception) -> str:
    """What a client may read of a stage's failure: Thresher's own errors are written for it;
    anything else (a library's message may hold paths or data) only by name."""
    if isinstance(exc, ThresherError):
        return f"{type(exc).__name__}: {exc}"[:300]
    return f"{type(exc).__name__} (the service log has the details)"


@dataclass(frozen=True)
class StageServices:
    """The few long-lived services the stages use, built once by whoever runs the pipeline:
    ``thresher serve``'s lifespan (api/app.py) or a host embedding it
    (api/integrations/embedded.py). Each stage's factory hands a stage only the ones it needs.
    ``router`` is the proxy's (the pays gate looks a route's upstream model up in it); a host
    that routes requests itself has none."""

    settings: ServiceSettings
    provider: ModelProvider
    compression: CompressionService
    pools: TenantPools
    router: BackendRouter | None = None


StageFactory = Callable[[ThresherOptions, StageServices], "Stage | None"]


class StageRegistry:
    """The pipeline's stages in order, each built per request from its options (or absent)."""

    def __init__(self) -> None:
        self._factories: list[tuple[str, StageFactory]] = []

    def register(self, name: str, factory: StageFactory) -> None:
        self._factories.append((name, factory))

    def build(self, options: ThresherOptions, services: StageServices) -> list[Stage]:
        return [s for _, f in self._factories if (s := f(options, services)) is not None]

    def names(self) -> list[str]:
        return [n for n, _ in self._factories]
