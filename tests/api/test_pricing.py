"""Money (api/pricing.py): prices from settings or the genai-prices package, the
``x-thresher-saved-usd`` header and the ``thresher_saved_usd`` counter."""

from __future__ import annotations

import json

import httpx
import pytest
from genai_prices import Usage, calc_price

from tests.api.conftest import make_app
from tests.api.servers import fault_backend, serve_app
from thresher.api.pricing import FlatPrice, PriceBook, PriceSpec
from thresher.core.errors import ConfigError


def test_settings_prices_come_first_and_cached_input_defaults_to_input():
    book = PriceBook({"mine": PriceSpec(input=2.0, output=8.0)})
    assert book.cost(("mine",), 1_000_000, 500_000) == pytest.approx(6.0)
    assert book.cost(("mine",), 1_000_000, 0, cached_tokens=400_000) == pytest.approx(2.0)
    cheap = PriceBook({"c": PriceSpec(input=2.0, output=8.0, cached_input=0.5)})
    assert cheap.cost(("c",), 1_000_000, 0, cached_tokens=400_000) == pytest.approx(1.4)
    assert book.price("unknown-model-xyz", "mine") is not None  # the first name with a price


def test_package_prices_are_the_packages_own():
    book = PriceBook()
    for model in ("gpt-4o-mini", "claude-3-5-haiku-latest"):
        usage = Usage(input_tokens=12_345, output_tokens=678, cache_read_tokens=2_000)
        expected = float(calc_price(usage, model_ref=model).total_price)
        assert book.cost((model,), 12_345, 678, cached_tokens=2_000) == pytest.approx(expected)
    assert isinstance(book.price("gpt-4o-mini"), FlatPrice)
    assert book.price("no-such-model-anywhere") is None
    assert PriceBook(package=False).price("gpt-4o-mini") is None


def test_tiered_package_prices_follow_the_tier():
    book = PriceBook()
    price = book.price("gemini-2.5-pro")
    if price is None or isinstance(price, FlatPrice):
        pytest.skip("this genai-prices snapshot has no tiered price for gemini-2.5-pro")
    for tokens in (10_000, 300_000):
        expected = float(calc_price(Usage(input_tokens=tokens), model_ref="gemini-2.5-pro")
                         .total_price)  # fmt: skip
        assert price.cost(tokens) == pytest.approx(expected)


def test_a_bad_price_setting_names_the_field():
    from thresher.api.settings import service_settings

    with pytest.raises(ConfigError, match="prices"):
        service_settings(prices={"m": {"input": -1, "output": 1}})


@pytest.fixture(scope="module")
def backend():
    with fault_backend() as (url, _):
        yield url


def test_saved_usd_header_and_counter(provider, local_lm, backend, data_dir):
    text = json.loads((data_dir / "api" / "longqa_small.jsonl").open().readline())["context"]
    app = make_app(
        provider, local_lm, compress_min_tokens=50, money=True,
        routes={"mirror": backend, "gpt-4o-mini": backend},
        prices={"mirror": {"input": 3.0, "output": 15.0}},
    )  # fmt: skip
    with serve_app(app) as base:
        seen = {}
        for model in ("mirror", "gpt-4o-mini"):
            body = {"model": model, "messages": [{"role": "user", "content": text[:2400]}],
                    "thresher": {"compression": {"rate": 0.5, "when": "always"}}}  # fmt: skip
            answer = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
            assert answer.status_code == 200
            saved = int(answer.headers["x-thresher-saved-tokens"])
            assert saved > 0
            seen[model] = (saved, float(answer.headers["x-thresher-saved-usd"]))
        plain = httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
            "model": "mirror", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert float(plain.headers["x-thresher-saved-usd"]) == 0.0
        metrics = httpx.get(f"{base}/metrics").text
    saved, usd = seen["mirror"]
    assert usd == pytest.approx(saved * 3.0 / 1e6, abs=1e-8)
    saved, usd = seen["gpt-4o-mini"]
    package = float(calc_price(Usage(input_tokens=saved), model_ref="gpt-4o-mini").total_price)
    assert usd == pytest.approx(package, rel=1e-6, abs=1e-8)
    assert 'thresher_saved_usd_total{route="mirror"}' in metrics


def test_money_off_adds_no_header(provider, local_lm, backend):
    app = make_app(provider, local_lm, routes={"mirror": backend})
    with serve_app(app) as base:
        answer = httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
            "model": "mirror", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert "x-thresher-saved-usd" not in answer.headers
    assert app.state.thresher.prices is None and app.state.thresher.audit is None
