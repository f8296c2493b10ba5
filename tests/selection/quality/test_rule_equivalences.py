"""The fast paths of the quality rules answer exactly what the plain definitions answer."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.selection.quality.heuristics import (
    INNER_SYMBOL,
    has_inner_symbol,
    normalise,
    normalise_lines,
)

# Letters, digits, spaces of several kinds, symbols and the characters words may carry.
CHARS = st.sampled_from(list("ab1é漢 \n\t\u00a0\u3000()$#{}!?-'’./_,:"))
TEXTS = st.lists(CHARS, max_size=12).map("".join)


@settings(max_examples=3000, deadline=None)
@given(TEXTS)
def test_inner_symbol_scan_matches_the_pattern(text):
    assert has_inner_symbol(text) == bool(INNER_SYMBOL.search(text))


def test_inner_symbol_examples():
    assert has_inner_symbol("g{7ng is noise")  # inside a word
    assert has_inner_symbol("pay $a now")  # the first of a two-character word
    assert has_inner_symbol("(a) or a$")  # the second of a two-character word
    assert not has_inner_symbol("Is it hello? Yes, it is (really) so.")  # prose punctuation
    assert not has_inner_symbol("")


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.text(max_size=12) | TEXTS, max_size=4))
def test_lines_normalise_as_their_parts(parts):
    # Any Unicode, combining marks and case pairs included: the line break is a boundary.
    assert normalise_lines(parts) == normalise("\n".join(parts))


def test_lines_normalise_examples():
    assert normalise_lines(["Hello, World!", "", "ÉCOLE\u0301 ﬁne"]) == normalise(
        "Hello, World!\n\nÉCOLE\u0301 ﬁne"
    )
    assert normalise_lines([]) == normalise("") == ""
