from __future__ import annotations

import numpy as np
import pytest

from thresher.core.record import Record
from thresher.core.steps import Scorer, apply_scorer
from thresher.selection.quality.charlm import CharNgramLM
from thresher.selection.quality.classifier import QualityClassifier
from thresher.selection.quality.perplexity import PerplexityScorer
from thresher.selection.quality.turns import turns


def _row(i, instruction, inp, output):
    row = {"instruction": instruction, "input": inp, "output": output}
    return Record(str(i), text=output, metadata={"row": row})


def test_ifd_is_low_when_the_request_explains_the_response(scorer):
    passage = "The Eiffel Tower was finished in 1889 for the World's Fair in Paris."
    rows = [
        _row(0, "Copy the input.", passage, passage),
        _row(1, "Copy the input.", "Bananas are yellow.", passage),
        _row(2, "Say something.", "", ""),
    ]
    ppl = PerplexityScorer(scorer, max_response_tokens=32)
    values = ppl.score(rows)
    assert values.shape == (3, 3)
    assert values[0, 2] < 0.5 < values[1, 2]  # IFD: the copy is explained by its request
    assert np.isnan(values[2]).all()  # no response: no score, not a default


def test_multi_turn_perplexity_averages_turns(scorer):
    chat = Record("m", messages=[
        {"role": "user", "content": "Count to three."},
        {"role": "assistant", "content": "One, two, three."},
        {"role": "user", "content": "Now to five."},
        {"role": "assistant", "content": "One, two, three, four, five."},
    ])  # fmt: skip
    ppl = PerplexityScorer(scorer)
    each = ppl.turn_perplexities([t.prompt for t in turns(chat)], [t.response for t in turns(chat)])
    assert np.isclose(ppl.score([chat])[0, 2], np.mean([t.ifd for t in each]))


def test_classifier_separates_held_out_rows_and_round_trips(tmp_path, records, labels):
    garbage = {"garbled_random_chars", "gibberish_language"}
    good = [r for r in records if r.id not in labels]
    bad = [r for r in records if labels.get(r.id, {}).get("defect") in garbage]
    text = [t.response for r in good for t in turns(r)]
    noise = [t.response for r in bad for t in turns(r)]
    model = QualityClassifier(n_features=2**14, ngram=3, analyzer="char_wb")
    model.fit(text[::2], noise[::2])
    held_good, held_bad = model.predict_proba(text[1::2]), model.predict_proba(noise[1::2])
    auc = (held_good[:, None] > held_bad[None, :]).mean()
    assert auc > 0.9
    model.save(tmp_path / "clf")
    again = QualityClassifier.load(tmp_path / "clf")
    assert np.allclose(again.score(good[:5]), model.score(good[:5]))


@pytest.mark.parametrize("make", ["charlm", "classifier"])
def test_scorers_conform(make, records):
    texts = [t.response for r in records for t in turns(r) if t.response.strip()]
    step: Scorer
    if make == "charlm":
        step = CharNgramLM().fit(texts)
        step.name = "charlm"  # type: ignore[attr-defined]
    else:
        step = QualityClassifier(n_features=2**12).fit(texts[:50], ["x y z"] * 5)
    batch = records[:10]
    apply_scorer(step, batch)
    assert all(step.name in r.scores for r in batch)
