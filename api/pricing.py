"""What tokens cost: per-model prices, from settings or from a maintained price package.

A model's price is looked up once: ``THRESHER_PRICES`` first (USD per 1M input, cached input and
output tokens, by the public model name or the backend's name for it), then the
``genai-prices`` package (its snapshot of providers' published prices, which ships with it and
is read offline; tiered prices, as for long Gemini prompts, are applied by the package). A model
neither knows costs nothing that can be said: :meth:`PriceBook.cost` is None, never a guess.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

MILLION = 1_000_000


class PriceSpec(BaseModel):
    """One model's prices in USD per 1M tokens (``cached_input`` default: ``input``)."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)


class Price(Protocol):
    """Prices one request's tokens, in USD."""

    def cost(self, input_tokens: int, output_tokens: int = 0, cached_tokens: int = 0) -> float:
        """``input_tokens`` includes ``cached_tokens`` (as OpenAI's usage counts them)."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class FlatPrice:
    """The same price per token however long the prompt (USD per 1M tokens)."""

    input: float
    output: float
    cached_input: float

    def cost(self, input_tokens: int, output_tokens: int = 0, cached_tokens: int = 0) -> float:
        cached = min(max(cached_tokens, 0), input_tokens)
        return (
            (input_tokens - cached) * self.input
            + cached * self.cached_input
            + output_tokens * self.output
        ) / MILLION

    def describe(self) -> str:
        return f"in {self.input:g}, cached {self.cached_input:g}, out {self.output:g} USD/1M"


class PackagePrice:
    """A ``genai-prices`` model price with tiers (it prices each request itself)."""

    def __init__(self, model_price: Any) -> None:
        self._price = model_price

    def cost(self, input_tokens: int, output_tokens: int = 0, cached_tokens: int = 0) -> float:
        from genai_prices import Usage

        cached = min(max(cached_tokens, 0), input_tokens)
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                      cache_read_tokens=cached)  # fmt: skip
        return float(self._price.calc_price(usage)["total_price"])

    def describe(self) -> str:
        return str(self._price)


def from_package(model: str) -> Price | None:
    """The price ``genai-prices`` knows for ``model``, or None."""
    try:
        from genai_prices import Usage, calc_price
    except ImportError as exc:  # pragma: no cover - the api extra installs it
        raise ImportError("Prices need genai-prices: pip install 'thresher[api]'") from exc
    from decimal import Decimal

    try:
        found = calc_price(Usage(input_tokens=1), model_ref=model).model_price
    except LookupError:
        return None
    flat = (found.input_mtok, found.output_mtok)
    if all(isinstance(v, Decimal | int | float | None) for v in (*flat, found.cache_read_mtok)):
        inp, out = float(found.input_mtok or 0), float(found.output_mtok or 0)
        cached = found.cache_read_mtok
        return FlatPrice(inp, out, inp if cached is None else float(cached))
    return PackagePrice(found)


class PriceBook:
    """Prices by model name: settings first, then the package; each name looked up once.

    Args:
        prices: ``THRESHER_PRICES``: model name -> :class:`PriceSpec`.
        package: Whether to ask ``genai-prices`` for models not in ``prices``.
    """

    def __init__(self, prices: dict[str, PriceSpec] | None = None, package: bool = True) -> None:
        self.prices = prices or {}
        self.package = package
        self._found: dict[str, Price | None] = {}
        self._lock = threading.Lock()

    def price(self, *names: str) -> Price | None:
        """The price of the first of ``names`` that has one (the public name, then the
        backend's name for the model), or None."""
        for name in names:
            if not name:
                continue
            with self._lock:
                if name in self._found:
                    found = self._found[name]
                else:
                    found = self._found[name] = self._lookup(name)
            if found is not None:
                return found
        return None

    def _lookup(self, name: str) -> Price | None:
        spec = self.prices.get(name)
        if spec is not None:
            cached = spec.input if spec.cached_input is None else spec.cached_input
            return FlatPrice(spec.input, spec.output, cached)
        return from_package(name) if self.package else None

    def cost(
        self, names: tuple[str, ...], input_tokens: int, output_tokens: int = 0,
        cached_tokens: int = 0,
    ) -> float | None:  # fmt: skip
        """USD for one request's tokens on the first of ``names`` with a price, or None."""
        found = self.price(*names)
        return None if found is None else found.cost(input_tokens, output_tokens, cached_tokens)
