from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.core.errors import ConfigError
from thresher.core.record import Record
from thresher.selection.quality.charlm import CharNgramLM
from thresher.selection.quality.repetition import minimal_period
from thresher.selection.quality.rulefilter import HeuristicFilter
from thresher.selection.quality.turns import turns

RULE_FOR = {
    "empty_output": "empty",
    "one_word_output": "non_answer",
    "output_repeats_input": "repeats_input",
    "garbled_repeated_chars": "",
    "garbled_random_chars": "",
    "gibberish_language": "language_likeness",
    "long_repetitive": "",
}


def test_flags_every_seeded_defect_and_few_clean_rows(records, labels):
    mask, reasons = HeuristicFilter().fit(records).keep(records)
    for record, kept, why in zip(records, mask, reasons, strict=True):
        defect = labels.get(record.id, {}).get("defect")
        if defect in RULE_FOR:
            assert not kept, (record.id, defect)
            assert RULE_FOR[defect] in why
    clean = [k for r, k in zip(records, mask, strict=True) if r.id not in labels]
    assert np.mean(clean) >= 0.98


def test_empty_instruction_and_response_are_reasons_not_crashes():
    rows = [
        Record("a", text="", metadata={"row": {"instruction": "", "input": "", "output": ""}}),
        Record("b", messages=[{"role": "user", "content": "Name a fruit."},
                              {"role": "assistant", "content": ""}]),
    ]  # fmt: skip
    mask, why = HeuristicFilter().keep(rows)
    assert not mask.any()
    assert "empty: request is empty" in why[0] and "empty: response is empty" in why[0]
    assert "empty: response is empty" in why[1]


def test_multi_turn_rows_are_judged_per_assistant_turn():
    record = Record(
        "c",
        messages=[
            {"role": "system", "content": "You answer questions about geography."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
            {"role": "user", "content": "And of Italy?"},
            {"role": "assistant", "content": "!!!!!!!!!!!!!!!!!!!!!!!!"},
        ],
    )
    assert [t.index for t in turns(record)] == [0, 1]
    mask, why = HeuristicFilter().keep([record])
    assert not mask[0]
    assert "repeated_unit: response 2" in why[0]
    assert "response 1" not in why[0]


def test_unknown_rule_names_the_choices():
    with pytest.raises(ConfigError, match="Unknown heuristic rule"):
        HeuristicFilter(rules=("no_such_rule",)).fit([])


@given(st.text(min_size=1, max_size=8), st.integers(min_value=1, max_value=12))
def test_minimal_period_spells_the_text(unit, times):
    text = unit * times
    p = minimal_period(text)
    assert 1 <= p <= len(unit)
    assert (text[:p] * (len(text) // p + 1))[: len(text)] == text


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=6))
def test_keep_returns_one_decision_per_record(outputs):
    rows = [
        Record(str(i), text=o, metadata={"row": {"instruction": "Say it.", "output": o}})
        for i, o in enumerate(outputs)
    ]
    mask, why = HeuristicFilter().keep(rows)
    assert mask.shape == (len(rows),)
    assert all((w is None) == bool(k) for k, w in zip(mask, why, strict=True))


def test_char_model_prices_noise_above_language_and_round_trips(tmp_path, records):
    requests = [t.input for r in records for t in turns(r)]
    model = CharNgramLM().fit(requests)
    english, noise = model.bits_per_char(
        ["The cat sat on the mat and looked at the rain.", "x7#Qz]{k9@!pW^v0~Lb"]
    )
    assert english < model.unigram_entropy_ < noise
    model.save(tmp_path / "lm")
    again = CharNgramLM.load(tmp_path / "lm")
    assert np.allclose(again.bits_per_char(["Paris is in France."]),
                       model.bits_per_char(["Paris is in France."]))  # fmt: skip


def test_a_job_too_small_to_model_its_language_says_the_rule_judged_nothing(
    tmp_path, instructions_path
):
    from thresher import selection

    rows = instructions_path.read_text(encoding="utf-8").splitlines()
    small = tmp_path / "small.jsonl"
    small.write_text("\n".join(rows[:5]) + "\n", encoding="utf-8")
    notes = {}
    for name, path in (("small", small), ("whole", instructions_path)):
        recipe = {"inputs": [str(path)], "steps": [{"type": "quality_rules"}]}
        notes[name] = selection.run_recipe(recipe, tmp_path / name, progress=False).report.notes
    assert any("language_likeness judged no row" in n for n in notes["small"]), notes["small"]
    assert not any("language_likeness" in n for n in notes["whole"]), notes["whole"]
