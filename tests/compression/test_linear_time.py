"""Planning (segments, units, protected spans) takes time linear in the text, whatever the text.

No absolute timings: each case times n and 4n characters of the same shape (best of three) and
checks the ratio stays well under the 16 a quadratic scan would show.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.compression.scan import TOO_DEEP, emails, fences, json_values, urls
from thresher.compression.structured import split_segments
from thresher.compression.units import ProtectOptions, split_units
from thresher.core.text import ends_sentence, sentence_ends

N = 24_000
# Linear is 4; allow noise on a shared machine, and catch anything near quadratic (16).
SLACK = 10.0

SHAPES = [
    "ab.",  # the email pattern's worst case
    "```x\n",  # fence openers without a closer
    "~~~\n",
    "[1, ",  # nested arrays that never close
    "[",
    "]",
    "{",
    '{"a": ',
    '"',
    "\\",
    '["a',
    "a@",
    "a.b@c.",
    "@a.",
    "http://",
    "www.",
    "http://a!!!",
    ".",
    " ",
    "\n",
    "1,",
    "9",
    "March 3, ",
    "| a |\n",
    "# ",
    "- ",
    "[x](",
    "![a](b",
    "Alice: ",
    "[10:02] ",
    "    x\n",
    "# c\n",
    "a",  # one long word: a pattern that backtracks inside a word would be quadratic
    "a(",
    "x1",
    "`",
]


def plan(text: str) -> None:
    split_units(text, ProtectOptions())
    split_segments(text)
    # The sentence-end rule every compressor uses; a word after a long run of marks is the
    # case a backtracking pattern would scan again from each mark.
    sentence_ends(text + "a")
    ends_sentence(text + "a")


def best_of(text: str, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        plan(text)
        best = min(best, time.perf_counter() - start)
    return best


def growth(unit: str, n: int = N) -> float:
    small = (unit * (n // len(unit) + 1))[:n]
    large = (unit * (4 * n // len(unit) + 1))[: 4 * n]
    return best_of(large) / max(best_of(small), 1e-4)


@pytest.mark.parametrize("unit", SHAPES)
def test_every_delimiter_run_plans_in_linear_time(unit):
    assert growth(unit) < SLACK, unit


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.text(
        alphabet=st.sampled_from(list('ab.@:/`~{}[]"\\,1 \n|#-!()*_<>')), min_size=1, max_size=12
    )
)
def test_any_short_shape_repeated_plans_in_linear_time(unit):
    assert growth(unit, 8_000) < SLACK, repr(unit)


def test_the_reported_inputs_plan_quickly_relative_to_plain_prose():
    """The issue's two messages take about as long as plain prose of the same length."""
    prose = ("The river rose over the bridge while the village slept. " * 1600)[:87_000]
    for text in ("ab." * 29_000, "```x\n" * 12_000):
        assert best_of(text, 2) < 10 * best_of(prose[: len(text)], 2) + 0.05


def test_scanners_find_what_the_patterns_did():
    text = (
        "Mail ann.lee+x@mail.example.co.uk, or bob@ex-ample.org. See "
        "https://example.com/a?b=1). Also www.example.org/x, and ftp://f.example/y!"
    )
    assert [text[a:b] for a, b in emails(text)] == [
        "ann.lee+x@mail.example.co.uk",
        "bob@ex-ample.org",
    ]
    assert [text[a:b] for a, b in urls(text)] == [
        "https://example.com/a?b=1",
        "www.example.org/x",
        "ftp://f.example/y",
    ]
    assert emails("a@b") == [] and emails("@a.b") == [] and emails("x@y.z-") == [(0, 5)]


def test_fences_pair_openers_with_the_next_closer():
    text = "```py\nx = 1\n```\ntext\n~~~\n```\n~~~\n```x\nno closer"
    found = fences(text)
    assert [text[f.start : f.end] for f in found] == ["```py\nx = 1\n```", "~~~\n```\n~~~"]
    assert found[0].info == "py" and text[found[0].body_start : found[0].body_end] == "x = 1\n"


def test_json_values_skip_strays_and_find_values_inside_asides():
    text = 'Note [see {"a": [1, 2]} here] and {"b": "x]"} but not {c} or "{"'
    found = [(text[a:b], v) for a, b, v in json_values(text, lambda v, a, b: True)]
    assert found == [('{"a": [1, 2]}', {"a": [1, 2]}), ('{"b": "x]"}', {"b": "x]"})]
    deep = "[" * 5000 + "]" * 5000
    # Past the parser's depth: one value that cannot be read, offered as such (kept whole).
    assert json_values(deep, lambda v, a, b: True) == [(0, 10_000, TOO_DEEP)]
