"""Audit mode (api/audit.py): traffic forwarded unchanged, sampled requests compressed and sent
off the request path, answers compared, and ``/v1/audit`` per tenant, route, method and rate.
The backend is tests/api/verbose_backend.py: its answers grow when the prompt is cut hard."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from tests.api.conftest import make_app
from tests.api.servers import serve_app
from thresher.api.audit import AuditLedger, Totals, agreement, judged, normalise


def test_short_answers_agree_only_when_equal():
    assert normalise("  Paris. ") == normalise("paris") == "paris"
    assert agreement("Paris.", "paris", short_words=12, similarity=0.85) == (True, None, "exact")
    assert agreement("Yes", "No", short_words=12, similarity=0.85)[0] is False
    long = "word " * 20
    assert agreement(long, long, short_words=12, similarity=0.85) == (None, None, "none")
    assert judged("SAME.") is True and judged("different") is False and judged("maybe") is None


def test_long_answers_agree_by_embedding(embedder):
    a = (
        "The detective found that the scarecrow had been stuffed with straw stolen from the "
        "neighbour's barn, and that the neighbour had done it to scare the crows away."
    )
    b = (
        "It turned out the neighbour stuffed the scarecrow with straw taken from his own barn "
        "so that the crows would be scared away, as the detective found."
    )
    c = (
        "Canada Day fireworks were cancelled this year because of heavy rain over the lake, "
        "and the city moved the concert indoors to the arena downtown."
    )

    def embed(texts):
        return embedder.encode(texts)

    same, cos_same, how = agreement(a, b, short_words=12, similarity=0.7, embed=embed)
    other, cos_other, _ = agreement(a, c, short_words=12, similarity=0.7, embed=embed)
    assert how == "embedding" and same is True and other is False
    assert cos_same > cos_other
    assert np.isclose(cos_same, float(embed([a, b])[0] @ embed([a, b])[1]))


def test_the_ledger_reports_per_rate_and_what_paid():
    ledger = AuditLedger()
    for rate, out, agreed in ((0.3, 60, 0), (0.7, 10, 1)):
        ledger.record("t", "m", "llmlingua2", rate, Totals(
            samples=1, sent=1, tokens_before=600, tokens_after=int(600 * rate),
            sent_input_saved=int(600 * (1 - rate)), output_original=10, output_compressed=out,
            judged=1, agreed=agreed,
        ))  # fmt: skip
    rows = {r["rate"]: r for r in ledger.report("t", min_agreement=0.9)}
    assert rows[0.3]["output_change"] == pytest.approx(5.0) and rows[0.3]["agreement"] == 0.0
    assert rows[0.3]["net_saved_tokens"] == 420 - 50 and rows[0.3]["paid"] is False
    assert rows[0.7]["paid"] is True and rows[0.7]["saved_share"] == pytest.approx(0.3)
    assert ledger.report("someone else", 0.9) == []


def body(text: str, **extra) -> dict:
    question = f"What happened? [words={len(text.split()) + 2}]"
    return {"model": "verbose", "messages": [{"role": "user", "content": f"{text}\n{question}"}],
            **extra}  # fmt: skip


def wait_for(base: str, key: str, samples: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        report = httpx.get(f"{base}/v1/audit", headers=auth).json()
        if report["pending"] == 0 and sum(r["samples"] for r in report["rows"]) >= samples:
            return report
        time.sleep(0.2)
    raise TimeoutError(f"audit did not finish: {report}")


def test_audit_mode_forwards_unchanged_and_reports_per_rate(
    provider, local_lm, verbose_url, passages
):
    app = make_app(
        provider, local_lm, routes={"verbose": verbose_url}, api_keys=["k1", "k2"],
        audit_routes={"verbose": 1.0}, audit_rates=[0.3, 0.7], audit_send_per_minute=100,
        prices={"verbose": {"input": 1.0, "output": 10.0}}, compress_min_tokens=50,
    )  # fmt: skip
    k1 = {"Authorization": "Bearer k1"}
    with serve_app(app) as base:
        url = f"{base}/v1/chat/completions"
        for text in passages[:4]:
            sent = body(text, thresher={"compression": {"rate": 0.5}})
            answer = httpx.post(url, json=sent, headers=k1, timeout=60)
            assert answer.status_code == 200
            # As without Thresher: the backend read every word, the answer is the short one.
            words = len(sent["messages"][0]["content"].split())
            assert answer.json()["usage"]["prompt_tokens"] == words
            assert answer.json()["choices"][0]["message"]["content"].count(" ") < 8
            assert "x-thresher-compression" not in answer.headers
            assert answer.headers["x-thresher-audit"] in ("sampled; rate=0.3", "sampled; rate=0.7")
        stream = httpx.post(url, json=body(passages[4], stream=True), headers=k1, timeout=60)
        assert stream.status_code == 200 and stream.text.endswith("data: [DONE]\n\n")
        report = wait_for(base, "k1", samples=5)
        other = httpx.get(f"{base}/v1/audit", headers={"Authorization": "Bearer k2"}).json()
        unauthorised = httpx.get(f"{base}/v1/audit")
        metrics = httpx.get(f"{base}/metrics", headers=k1).text
    assert unauthorised.status_code == 401
    assert other["enabled"] and other["rows"] == []  # each tenant sees its own traffic only
    rows = {r["rate"]: r for r in report["rows"]}
    assert set(rows) == {0.3, 0.7} and report["routes"] == {"verbose": 1.0}
    hard, mild = rows[0.3], rows[0.7]
    assert hard["samples"] + mild["samples"] == 5 and hard["sent"] == hard["samples"]
    assert hard["saved_share"] > mild["saved_share"] > 0.2
    assert hard["output_change"] > 3 and mild["output_change"] == 0.0  # cut hard, answers grow
    assert hard["agreement"] == 0.0 and mild["agreement"] == 1.0
    assert hard["saved_usd"] < 0 < mild["saved_usd"]  # more output cost than input saved
    assert hard["paid"] is False and mild["paid"] is True
    assert report["paid_at"] == {"verbose/llmlingua2": 0.7}
    assert 'thresher_audit_samples_total{method="llmlingua2",outcome="agreed_exact"' in metrics
    assert 'arm="compressed"' in metrics
    # The audit pairs taught the pays gate how this route's answers grow.
    output = app.state.thresher.compression.gate.output
    assert output.ratio("verbose", 0.3) > 3 and output.ratio("verbose", 0.75) < 1.5


def test_a_judge_route_decides_for_long_answers(provider, local_lm, verbose_url, passages):
    app = make_app(
        provider, local_lm, routes={"verbose": verbose_url, "judge": verbose_url},
        audit_routes={"verbose": 1.0}, audit_rates=[0.3], audit_send_per_minute=10,
        audit_judge_route="judge", audit_short_words=3, compress_min_tokens=50,
    )  # fmt: skip
    with serve_app(app) as base:
        httpx.post(f"{base}/v1/chat/completions", json=body(passages[6]), timeout=60)
        report = wait_for(base, "", samples=1)
        metrics = httpx.get(f"{base}/metrics").text
    (row,) = report["rows"]
    assert row["judged"] == 1 and row["agreed"] == 0 and row["mean_similarity"] is None
    assert 'outcome="disagreed_judge"' in metrics


def test_audit_without_budget_computes_savings_only(provider, local_lm, verbose_url, passages):
    app = make_app(
        provider, local_lm, routes={"verbose": verbose_url}, audit_sample=1.0,
        audit_rates=[0.5], compress_min_tokens=50, money=True,
        prices={"verbose": {"input": 1.0, "output": 10.0}},
    )  # fmt: skip
    with serve_app(app) as base:
        answer = httpx.post(f"{base}/v1/chat/completions", json=body(passages[5]), timeout=60)
        assert answer.status_code == 200
        # The client has its answer while its audit (seconds of compression) still runs.
        assert httpx.get(f"{base}/v1/audit").json()["pending"] == 1
        report = wait_for(base, "", samples=1)
    (row,) = report["rows"]
    assert row["sent"] == 0 and row["saved_tokens"] > 0 and row["output_change"] is None
    assert row["input_saved_usd"] == pytest.approx(row["saved_tokens"] / 1e6)
    assert row["paid"] is False and report["paid_at"] == {}


def test_audit_off_reports_disabled(provider, local_lm):
    with serve_app(make_app(provider, local_lm)) as base:
        report = httpx.get(f"{base}/v1/audit").json()
    assert report == {"enabled": False, "routes": {}, "rows": [], "paid_at": {}, "pending": 0}


def test_bad_audit_settings_name_the_setting(provider, local_lm):
    from fastapi.testclient import TestClient

    from thresher.api.settings import service_settings
    from thresher.core.errors import ConfigError

    with pytest.raises(ConfigError, match="audit_rates"):
        service_settings(audit_rates=[0.0, 2.0])
    with pytest.raises(ConfigError, match="audit_routes"):
        service_settings(audit_routes={"m": 1.5})
    app = make_app(provider, local_lm, audit_sample=0.5, audit_judge_route="no-such-judge")
    with pytest.raises(ConfigError, match="audit_judge_route"), TestClient(app):
        pass
