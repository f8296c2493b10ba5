"""Prometheus metrics of one app: requests, latency per route and per stage, tokens, errors.

Each app has its own registry, so several apps in one process (tests, benches) do not collide.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from thresher.api.pipeline import PipelineReport, StageReport
from thresher.core.errors import BackendError
from thresher.core.retry import error_kind

# Proxy overhead is sub-millisecond and compression takes seconds: buckets span both.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The service's counters and histograms, fed by the middleware, pipeline and proxy."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "thresher_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "thresher_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "thresher_stage_seconds",
            "Pipeline stage latency",
            ["stage", "status"],
            buckets=BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "thresher_prompt_tokens",
            "Prompt tokens before and after the pipeline",
            ["phase"],
            registry=r,
        )
        self.saved = Counter("thresher_tokens_saved", "Prompt tokens saved", registry=r)
        self.backend_errors = Counter(
            "thresher_backend_errors",
            "Backend failures by backend and kind",
            ["backend", "kind"],
            registry=r,
        )
        self.rejected = Counter(
            "thresher_rejected_requests", "Requests refused before routing", ["reason"], registry=r
        )
        # Money (api/pricing.py, ``money`` on) and audit mode (api/audit.py).
        self.saved_usd = Counter(
            "thresher_saved_usd", "USD of prompt tokens compression removed", ["route"], registry=r
        )
        self.audit_samples = Counter(
            "thresher_audit_samples",
            "Audited requests by route, method, rate and outcome",
            ["route", "method", "rate", "outcome"],
            registry=r,
        )
        self.audit_tokens = Counter(
            "thresher_audit_tokens",
            "Audited tokens: prompt before/after compression, output of the original and the "
            "compressed request",
            ["route", "method", "rate", "kind"],
            registry=r,
        )
        self.audit_usd = Counter(
            "thresher_audit_usd",
            "Price of the audited pairs: the original and the compressed request",
            ["route", "method", "rate", "arm"],
            registry=r,
        )

        # Labelled children, looked up once: ``labels()`` costs more than the count itself.
        self._before = self.prompt_tokens.labels("before")
        self._after = self.prompt_tokens.labels("after")
        self._routes: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        children = self._routes.get((route, status))
        if children is None:
            children = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._routes[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_stage(self, stage: StageReport) -> None:
        self.stage_latency.labels(stage.name, stage.status).observe(stage.ms / 1000)

    def observe_report(self, report: PipelineReport) -> None:
        self._before.inc(report.tokens_before)
        self._after.inc(report.tokens_after)
        if report.saved > 0:
            self.saved.inc(report.saved)

    def observe_saved_usd(self, route: str, usd: float) -> None:
        if usd > 0:
            self.saved_usd.labels(route).inc(usd)

    def observe_audit(
        self, route: str, method: str, rate: float, outcome: str, totals: Any = None
    ) -> None:
        """One audit sample's outcome and, with ``totals`` (api/audit.py), its tokens and prices."""
        labels = (route, method, f"{rate:g}")
        self.audit_samples.labels(*labels, outcome).inc()
        if totals is None:
            return
        for kind, value in (
            ("prompt_before", totals.tokens_before), ("prompt_after", totals.tokens_after),
            ("output_original", totals.output_original),
            ("output_compressed", totals.output_compressed),
        ):  # fmt: skip
            if value > 0:
                self.audit_tokens.labels(*labels, kind).inc(value)
        if totals.priced:
            self.audit_usd.labels(*labels, "original").inc(max(totals.cost_original_usd, 0.0))
            self.audit_usd.labels(*labels, "compressed").inc(max(totals.cost_compressed_usd, 0.0))

    def backend_error(self, backend: str, kind: str) -> None:
        self.backend_errors.labels(backend, kind).inc()

    def observe_backend_error(self, backend: str, error: BackendError) -> None:
        """Count one failed backend attempt (the backend layer's ``on_error`` hook)."""
        self.backend_error(backend, error_kind(error))

    def render(self) -> bytes:
        return generate_latest(self.registry)
