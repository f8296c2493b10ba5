"""The one sentence-end rule."""

from __future__ import annotations

from thresher.core.text import ends_sentence, sentence_ends, sentence_groups


def test_a_sentence_ends_at_its_mark_and_the_closing_punctuation_after_it():
    for piece in (".", " end.", ' said."', "?)", " 終わり。", "!\n", "done. "):
        assert ends_sentence(piece), piece
    for piece in (" Mr", ",", " 3.5x", ";", " e.g", "\n"):
        assert not ends_sentence(piece), piece
    text = 'He said "Stop." Then 3.14 was all. Why?\tFine'
    assert [text[:i][-6:] for i in sentence_ends(text)] == ['Stop."', "s all.", ". Why?"]
    assert sentence_ends("No end here") == [] and sentence_ends("One.") == [4]


def test_sentence_groups_break_at_ends_and_lines():
    pieces = ["A", " b", ".", " C", "!", "\n", "D", "\n", "\n", "E"]
    assert sentence_groups(pieces).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    assert sentence_groups([]).tolist() == []
