import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresher.compression.budget import greedy_keep, rank_rates, resolve_target
from thresher.compression.units import ProtectOptions, protected_spans, split_units
from thresher.core.errors import InputError

TEXT = (
    "Call 555-0100 on March 3, 2024 or visit https://example.com/a?b=1.\n"
    "```python\nx = {'a': 1}\n```\n"
    'Config: {"model": "gpt-4o", "k": [1, 2]} and 3.14% growth on 2024-05-01.'
)


def spans_text(text, options=None):
    return [text[a:b] for a, b in protected_spans(text, options or ProtectOptions())]


def test_builtin_kinds_are_protected():
    found = spans_text(TEXT)
    for expected in (
        "555-0100",
        "March 3, 2024",
        "https://example.com/a?b=1",
        "```python\nx = {'a': 1}\n```\n",  # a block takes its line break along
        '{"model": "gpt-4o", "k": [1, 2]}',
        "3.14%",
        "2024-05-01",
    ):
        assert expected in found, (expected, found)


def test_forced_tokens_and_patterns():
    text = "The codename is BLUE-FALCON and the ticket is TCK-991 today."
    options = ProtectOptions(force_tokens=("BLUE-FALCON",), force_patterns=(r"TCK-\d+",))
    assert spans_text(text, options) == ["BLUE-FALCON", "TCK-991"]


def test_bad_pattern_names_the_field():
    with pytest.raises(InputError, match=r"force_patterns\[0\]") as info:
        split_units("text", ProtectOptions(force_patterns=("([",)))
    assert info.value.field == "force_patterns[0]"


def test_cjk_is_cut_per_character_never_inside_one():
    units = split_units("我们喜欢 Python 和 日本語のテキスト。", ProtectOptions())
    cjk = [p.strip() for p in units.pieces if p.strip() and ord(p.strip()[0]) > 0x3000]
    assert all(len(p) == 1 for p in cjk)
    assert "".join(units.pieces) == "我们喜欢 Python 和 日本語のテキスト。"


@given(st.text(max_size=300))
def test_units_join_back_to_the_text(text):
    units = split_units(text, ProtectOptions())
    assert "".join(units.pieces) == text
    assert all(text[s : s + len(p)] == p for s, p in zip(units.starts, units.pieces, strict=True))


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), min_size=1, max_size=4))
def test_any_json_object_is_one_forced_unit(obj):
    blob = json.dumps(obj)
    units = split_units(f"before {blob} after", ProtectOptions(numbers=False))
    forced = [p.strip() for p, f in zip(units.pieces, units.forced, strict=True) if f]
    assert blob in forced


@pytest.mark.parametrize(
    "rate, target, field",
    [
        (0, None, "rate"),
        (1.5, None, "rate"),
        (float("nan"), None, "rate"),
        (None, 0, "target_tokens"),
        (None, -3, "target_tokens"),
        (0.5, 10, "rate"),
    ],
)
def test_bad_budgets_name_the_field(rate, target, field):
    with pytest.raises(InputError) as info:
        resolve_target(1000, rate, target)
    assert info.value.field == field


def test_resolve_target():
    assert resolve_target(1000, 0.33, None) == 330
    assert resolve_target(1000, None, 250) == 250
    assert resolve_target(1000, None, None) == 500


@given(
    st.lists(
        st.tuples(st.floats(0, 10), st.integers(1, 5), st.booleans()), min_size=1, max_size=40
    ),
    st.integers(0, 100),
)
def test_greedy_keep_respects_budget_and_forced(items, budget):
    import numpy as np

    scores, costs, forced = (np.array(x) for x in zip(*items, strict=True))
    keep = greedy_keep(scores.astype(float), costs.astype(float), forced.astype(bool), budget)
    assert keep[forced.astype(bool)].all()
    free = costs[keep & ~forced.astype(bool)].sum()
    assert free <= max(0, budget - costs[forced.astype(bool)].sum())


def test_rank_rates_are_monotone():
    rates = rank_rates(5, 0.4, 0.3)
    assert list(rates) == sorted(rates, reverse=True)
    assert rates[0] == pytest.approx(0.52) and rates[-1] == pytest.approx(0.28)


def test_json_too_deep_to_read_is_kept_whole_not_cut_as_prose():
    """Red team: JSON nested 990 deep inside a prompt lost 828 of its 990 keys at rate 0.33."""
    deep = '{"key":' * 990 + "1" + "}" * 990
    text = "Config: " + deep + " and then some prose after it."
    assert spans_text(text) == [deep]
