"""The pipeline frame: options merged over deployment defaults, reports, headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresher.api.pipeline import (
    Pipeline,
    PipelineReport,
    RequestContext,
    StageReport,
    deep_merge,
    merge_options,
)
from thresher.core.errors import InputError

DEFAULTS = {"compression": {"method": "llmlingua", "rate": 0.5}, "budget_tokens": 900}


def test_request_options_overlay_the_deployment_defaults():
    options = merge_options(DEFAULTS, {"compression": {"rate": 0.3, "protect": ["Paris"]}})
    assert options.compression.method == "llmlingua" and options.compression.rate == 0.3
    assert options.compression.protect == ["Paris"] and options.budget_tokens == 900


def test_a_null_in_the_request_switches_a_default_stage_off():
    options = merge_options(DEFAULTS, {"compression": None})
    assert options.compression is None and options.budget_tokens == 900


def test_deep_merge_overlays_nested_objects_and_leaves_its_inputs_alone():
    over = {"compression": {"rate": 0.3}, "budget_tokens": None, "demonstrations": {"pool": "p"}}
    merged = deep_merge(DEFAULTS, over)
    assert merged == {
        "compression": {"method": "llmlingua", "rate": 0.3},
        "demonstrations": {"pool": "p"},
    }
    assert DEFAULTS == {"compression": {"method": "llmlingua", "rate": 0.5}, "budget_tokens": 900}
    assert over["compression"] == {"rate": 0.3}


@pytest.mark.parametrize(
    "request_options, field",
    [
        ({"compression": {"rate": 0.5, "target_tokens": 10}}, "thresher.compression"),
        ({"budget_tokens": 0}, "thresher.budget_tokens"),
        ({"demonstrations": {"k": 2}}, "thresher.demonstrations.pool"),
        ({"compression": {"ratio": 2}}, "thresher.compression.ratio"),
    ],
)
def test_bad_options_name_the_field(request_options, field):
    with pytest.raises(InputError) as caught:
        merge_options({}, request_options)
    assert caught.value.field == field


@given(rate=st.floats(0.01, 1.0), budget=st.integers(1, 10**6))
def test_merging_with_no_request_gives_the_defaults(rate, budget):
    defaults = {"compression": {"rate": rate}, "budget_tokens": budget}
    assert merge_options(defaults, None) == merge_options({}, defaults)


def test_no_stage_reports_the_count_and_no_saving(counter):
    body = {"messages": [{"role": "user", "content": "one two three"}]}
    ctx = RequestContext("chat", body, merge_options({}, None), counter)
    report = Pipeline([]).run(ctx)
    assert report.tokens_before == report.tokens_after == counter.count("one two three")
    assert report.headers()["x-thresher-saved-tokens"] == "0"


def test_report_headers_name_each_stage_and_a_failure():
    report = PipelineReport(tokens_before=100, tokens_after=40, counter="cl100k_base")
    report.stages = [
        StageReport("demonstrations", "skipped", 0.0, "no pool"),
        StageReport("compression", "failed", 12.5, "RuntimeError: x"),
    ]
    report.failed = "compression"
    headers = report.headers()
    assert headers["x-thresher-saved-tokens"] == "60"
    assert "compression;status=failed;ms=12.5" in headers["x-thresher-stages"]
    assert headers["x-thresher-failed-stage"] == "compression"
    assert report.as_dict()["saved_tokens"] == 60


def test_a_failed_stage_reports_library_errors_by_name_only():
    from thresher.api.pipeline import _failure
    from thresher.core.errors import ModelUnavailableError

    assert _failure(RuntimeError("/home/me/secret.txt not found")) == (
        "RuntimeError (the service log has the details)"
    )
    assert _failure(ModelUnavailableError("No model x.")) == "ModelUnavailableError: No model x."
