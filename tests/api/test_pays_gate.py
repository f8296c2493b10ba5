"""The output-aware pays gate (api/pays.py): its model of output growth, its choice of rate,
and the proxy against a real loopback backend whose answers grow when the prompt is cut hard
(tests/api/verbose_backend.py)."""

from __future__ import annotations

import openai
import pytest

from tests.api.conftest import make_app
from tests.api.servers import serve_app
from thresher.api.pays import Inputs, OutputModel, PaysGate, bucket
from thresher.api.pricing import PriceBook, PriceSpec

PRICES = {"verbose": PriceSpec(input=1.0, output=10.0)}


def inputs(rate: float, prefill: float | None = 0.5, decode: float | None = 20.0) -> Inputs:
    return Inputs("r", ("r",), 600, 600, rate, 10.0, prefill, decode)


def test_output_model_learns_pairs_and_traffic_and_interpolates():
    model = OutputModel(alpha=1.0)
    assert model.ratio("r", 0.5) is None and model.extra_tokens("r", 0.5) is None
    model.observe("r", 1.0, 10)  # an uncut answer: the baseline
    model.observe("r", 0.3, 110)  # a compressed one from live traffic
    assert model.ratio("r", 0.3) == pytest.approx(11.0)
    assert model.ratio("r", 0.2) == pytest.approx(11.0)  # below what was seen: no extrapolation
    assert model.ratio("r", 0.65) == pytest.approx(6.0)  # halfway to the anchor (1.0 -> 1.0)
    model.observe_pair("r", 0.3, 10, 50)  # an audit pair outranks traffic at that share
    assert model.ratio("r", 0.3) == pytest.approx(5.0)
    assert model.extra_tokens("r", 0.3) == pytest.approx(40.0)
    assert bucket(0.33) == 0.35 and bucket(0.0) == 0.05 and bucket(1.2) == 1.0


def test_gate_compresses_when_nothing_is_known_and_keeps_the_rate_without_growth():
    gate = PaysGate(OutputModel())
    assert gate.decide(inputs(0.3, prefill=None)).skip is None  # nothing to weigh: compress
    verdict = gate.decide(inputs(0.3))
    assert verdict.rate == 0.3 and verdict.skip is None  # no output growth known: cut most


def test_gate_picks_a_milder_rate_when_output_grows_at_the_hard_one():
    output = OutputModel(alpha=1.0)
    output.observe("r", 1.0, 10)
    output.observe_pair("r", 0.3, 10, 60)  # cut hard: 6x the answer
    output.observe_pair("r", 0.7, 10, 10)  # cut mildly: the same answer
    gate = PaysGate(output, PriceBook(PRICES, package=False), objective="money")
    verdict = gate.decide(Inputs("r", ("verbose",), 600, 600, 0.3, None, None, None))
    assert verdict.skip is None and verdict.rate == 0.7
    assert verdict.why.startswith("milder rate 0.7") and "output +50 tokens" in verdict.why
    timed = PaysGate(output).decide(inputs(0.3))
    assert timed.rate == 0.7  # in time: 50 more tokens at 20 ms outweigh 240 at 0.5 ms


def test_gate_skips_when_no_rate_makes_the_total_fall():
    output = OutputModel(alpha=1.0)
    output.observe("r", 1.0, 10)
    output.observe_pair("r", 0.35, 10, 200)
    gate = PaysGate(output, PriceBook(PRICES, package=False), objective="money")
    verdict = gate.decide(Inputs("r", ("verbose",), 600, 600, 0.3, None, None, None))
    assert verdict.skip is not None and verdict.does_not_pay
    assert "does not fall" in verdict.skip and "output +190 tokens" in verdict.skip
    unpriced = PaysGate(output, PriceBook({}, package=False), objective="money")
    assert unpriced.decide(inputs(0.3)).skip is None  # no price: nothing to weigh


def ask(client, text: str, **compression):
    question = f"What happened? [words={len(text.split()) + 2}]"  # the backend's reference
    raw = client.chat.completions.with_raw_response.create(
        model="verbose",
        messages=[{"role": "user", "content": f"{text}\n{question}"}],
        extra_body={"thresher": {"compression": compression}},
    )
    return raw.headers, raw.parse()


@pytest.mark.parametrize("objective", ["money", "time"])
def test_the_proxy_chooses_a_milder_rate_or_skips_when_answers_grow(
    provider, local_lm, verbose_url, passages, objective
):
    app = make_app(
        provider, local_lm, routes={"verbose": verbose_url}, compress_min_tokens=50,
        prices={"verbose": {"input": 1.0, "output": 10.0}}, pays_objective=objective,
    )  # fmt: skip
    with serve_app(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        # Compressed traffic teaches the gate: cut hard, this backend's answers grow; cut
        # mildly (money only), they do not.
        grown = [ask(client, text, rate=0.3, when="always")[1].usage.completion_tokens
                 for text in passages[:2]]  # fmt: skip
        mild = [ask(client, text, rate=0.7, when="always")[1].usage.completion_tokens
                for text in (passages[2:4] if objective == "money" else [])]  # fmt: skip
        ask(client, "Short.", rate=0.3)  # under compress_min_tokens: an uncut answer
        headers, answer = ask(client, passages[4], rate=0.3)
        # The next turn forwards that message as it was, whatever rate the gate chose for it.
        first = f"{passages[4]}\nWhat happened? [words={len(passages[4].split()) + 2}]"
        follow = client.chat.completions.with_raw_response.create(model="verbose", messages=[
            {"role": "user", "content": first},
            {"role": "assistant", "content": answer.choices[0].message.content},
            {"role": "user", "content": "Who did it? [words=4]"},
        ], extra_body={"thresher": {"compression": {"rate": 0.3}}})  # fmt: skip
        assert "cached=1" in follow.headers["x-thresher-compression"]
        # A completion the gate decides on alike (it raised a TypeError when the gate skipped).
        completion = client.completions.with_raw_response.create(
            model="verbose", prompt=f"{passages[5]}\nWhat happened? [words=20]",
            extra_body={"thresher": {"compression": {"rate": 0.3}}},
        )  # fmt: skip
    decision = headers["x-thresher-compression-decision"]
    assert min(grown) > 5 * max([7, *mild])  # the backend answered at length to hard cuts
    assert "extra_output_tokens=" in headers["x-thresher-compression-estimate"]
    if objective == "money":
        # Cut mildly the answer stays short: a milder rate saves input without more output.
        assert decision.startswith("compress at a milder rate 0.7"), decision
        assert "rate=0.7" in headers["x-thresher-compression"]
    else:
        # In time the compression itself (seconds here) outweighs any prefill saving too.
        assert decision.startswith("skip new messages: predicted saving"), decision
        assert "does not fall" in decision and "(output +" in decision
        skipped = completion.headers["x-thresher-compression-decision"]
        assert skipped.startswith("skipped: predicted saving"), skipped
    assert completion.http_response.status_code == 200
    assert answer.usage.completion_tokens < min(grown)  # and the answer did not grow as much
