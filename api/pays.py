"""Whether compressing pays, input and output together.

Cutting a prompt hard can make a model answer at greater length (it hedges, restates, asks), and
output tokens cost more than input tokens in time (one decode step each) and in money (output
prices are several times input prices). So the gate predicts, per rate, the whole request:

- input: the new tokens compression removes, at the route's prefill cost per token or its
  input price;
- output: the extra answer tokens that keeping that share of the prompt has caused on this
  route (:class:`OutputModel`, learned from audit pairs and from compressed traffic's usage),
  at the route's decode cost per token or its output price;
- (time only) the compression itself, at the method's learned cost per token.

It compresses at the requested rate, at a milder one where that saves more, or not at all when
no rate makes the predicted total fall; the decision header says which and why. What the gate
does not know (no prices, no timings yet, no output seen) it leaves out rather than guesses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

Objective = Literal["time", "money"]
BUCKET = 0.05  # kept shares are learned in steps of 0.05 of the prompt


def bucket(share: float) -> float:
    """The learning bucket of a kept share of the prompt (0.05 .. 1.0)."""
    return min(1.0, max(BUCKET, round(round(share / BUCKET) * BUCKET, 2)))


@dataclass
class _Route:
    baseline: float | None = None  # output tokens of answers to uncompressed prompts (EMA)
    seen: dict[float, float] = field(default_factory=dict)  # kept share -> output tokens (EMA)
    paired: dict[float, float] = field(default_factory=dict)  # kept share -> output ratio (EMA)


class OutputModel:
    """How long a route's answers get when its prompts are cut, by kept share of the prompt.

    Two sources: audit pairs (the same request answered with and without compression: the ratio
    of their output tokens, the direct measure) and live traffic (output tokens of compressed
    answers against those of uncompressed ones on the route, a noisier one used where no pair
    was seen). Between the shares seen, the ratio is interpolated linearly, with a share of 1.0
    (nothing cut) anchored at 1.0; below the lowest share seen, that share's ratio holds.

    Args:
        alpha: Weight of a new observation in each moving average.
    """

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self._routes: dict[str, _Route] = {}
        self._lock = threading.Lock()

    def _mix(self, old: float | None, value: float) -> float:
        return value if old is None else old + self.alpha * (value - old)

    def observe(self, route: str, kept: float, output_tokens: int) -> None:
        """One answer on ``route`` whose prompt kept ``kept`` of its tokens (1.0: uncut)."""
        if output_tokens < 0:
            return
        with self._lock:
            found = self._routes.setdefault(route, _Route())
            if kept >= 1.0:
                found.baseline = self._mix(found.baseline, float(output_tokens))
            else:
                share = bucket(kept)
                found.seen[share] = self._mix(found.seen.get(share), float(output_tokens))

    def observe_pair(self, route: str, kept: float, original: int, compressed: int) -> None:
        """An audit pair: the same request's output tokens uncut and with ``kept`` kept."""
        if original <= 0 or compressed < 0 or kept >= 1.0:
            return
        with self._lock:
            found = self._routes.setdefault(route, _Route())
            share = bucket(kept)
            found.paired[share] = self._mix(found.paired.get(share), compressed / original)
            found.baseline = self._mix(found.baseline, float(original))

    def baseline(self, route: str) -> float | None:
        found = self._routes.get(route)
        return None if found is None else found.baseline

    def ratio(self, route: str, kept: float) -> float | None:
        """Predicted output tokens with ``kept`` of the prompt over those without; None when
        nothing was seen on the route."""
        with self._lock:
            found = self._routes.get(route)
            if found is None:
                return None
            points = dict(found.paired)
            if found.baseline:
                for share, tokens in found.seen.items():
                    points.setdefault(share, tokens / found.baseline)
        if not points:
            return None
        points[1.0] = 1.0
        shares = sorted(points)
        if kept <= shares[0]:
            return points[shares[0]]
        for lo, hi in zip(shares, shares[1:], strict=False):
            if lo <= kept <= hi:
                w = (kept - lo) / (hi - lo)
                return points[lo] + w * (points[hi] - points[lo])
        return 1.0

    def extra_tokens(self, route: str, kept: float) -> float | None:
        """Predicted extra output tokens when ``kept`` of the prompt is kept (may be < 0)."""
        ratio, base = self.ratio(route, kept), self.baseline(route)
        if ratio is None or base is None:
            return None
        return base * (ratio - 1.0)


@dataclass
class Verdict:
    """The gate's answer: the rate to compress at, or why not to compress.

    ``skip`` is a reason when the new messages should go uncompressed; ``does_not_pay`` says it
    is because compressing would not pay (their verbatim form is then remembered); ``why`` is
    what the decision header adds; ``estimate`` the ``x-thresher-compression-estimate`` value.
    """

    rate: float
    skip: str | None = None
    does_not_pay: bool = False
    why: str = ""
    estimate: str = ""


@dataclass
class Inputs:
    """What the gate knows about one request."""

    route: str
    names: tuple[str, ...]  # the route's model names, for its price
    new_tokens: int
    total_tokens: int
    rate: float
    cost_ms: float | None  # predicted compression time of the new tokens
    prefill_ms: float | None  # per uncached prompt token
    decode_ms: float | None  # per output token


class PaysGate:
    """Chooses the rate (or none) whose predicted total input + output cost falls most.

    Args:
        output: What cutting prompts does to this deployment's answers.
        prices: A :class:`thresher.api.pricing.PriceBook` (needed for ``money``).
        objective: ``time`` (milliseconds a request takes) or ``money`` (USD it costs).
        step: Milder rates tried, in steps of this, up to ``max_rate``.
    """

    def __init__(
        self, output: OutputModel, prices: Any = None, objective: Objective = "time",
        step: float = 0.1, max_rate: float = 0.9,
    ) -> None:  # fmt: skip
        self.output = output
        self.prices = prices
        self.objective = objective
        self.step = step
        self.max_rate = max_rate

    def candidates(self, rate: float) -> list[float]:
        out, r = [rate], rate
        while round(r + self.step, 2) <= self.max_rate:
            r = round(r + self.step, 2)
            out.append(r)
        return out

    def kept(self, x: Inputs, rate: float) -> float:
        """The share of the whole prompt kept when the new tokens are cut to ``rate``."""
        total = max(x.total_tokens, 1)
        return 1.0 - min(x.new_tokens, total) * (1.0 - rate) / total

    def net(self, x: Inputs, rate: float) -> tuple[float | None, float | None]:
        """(predicted saving in the objective's unit, predicted extra output tokens)."""
        extra = self.output.extra_tokens(x.route, self.kept(x, rate))
        removed = x.new_tokens * (1.0 - rate)
        if self.objective == "money":
            price = self.prices.price(*x.names) if self.prices is not None else None
            if price is None:
                return None, extra
            out_cost = price.cost(0, max(extra, 0.0)) if extra is not None else 0.0
            out_saved = price.cost(0, -extra) if extra is not None and extra < 0 else 0.0
            return price.cost(round(removed)) - out_cost + out_saved, extra
        if x.prefill_ms is None:
            return None, extra
        saving = removed * x.prefill_ms - (x.cost_ms or 0.0)
        if extra is not None and x.decode_ms is not None:
            saving -= extra * x.decode_ms
        return saving, extra

    def decide(self, x: Inputs) -> Verdict:
        """The rate with the largest predicted saving, or a skip when none saves anything."""
        unit = "USD" if self.objective == "money" else "ms"
        first, extra0 = self.net(x, x.rate)
        estimate = (
            f"objective={self.objective}; saving_{unit}={_fmt(first, unit)}; "
            f"extra_output_tokens={_fmt(extra0, 'tok')}"
        )
        if first is None:
            return Verdict(x.rate, estimate=estimate)  # nothing known to weigh: compress
        best, best_rate, best_extra = first, x.rate, extra0
        for rate in self.candidates(x.rate)[1:]:
            value, extra = self.net(x, rate)
            if value is not None and value > best:
                best, best_rate, best_extra = value, rate, extra
        if best <= 0:
            why = (
                f"predicted saving {_fmt(first, unit)} {unit} at rate {x.rate} "
                f"(output {_fmt(extra0, 'tok')} tokens) and none at milder rates: "
                f"the total ({self.objective}) does not fall"
            )
            return Verdict(x.rate, skip=why, does_not_pay=True, why=why, estimate=estimate)
        if best_rate != x.rate:
            why = (
                f"milder rate {best_rate}: predicted saving {_fmt(best, unit)} {unit} "
                f"(output {_fmt(best_extra, 'tok')} tokens) against {_fmt(first, unit)} {unit} "
                f"at rate {x.rate} (output {_fmt(extra0, 'tok')} tokens)"
            )
            return Verdict(best_rate, why=why, estimate=estimate)
        return Verdict(x.rate, estimate=estimate)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "unknown"
    if unit == "USD":
        return f"{value:.6f}"
    return f"{value:+.0f}" if unit == "tok" else f"{value:.1f}"
