"""Every registered step type, run through the engine with its example parameters.

Examples may read a score named ``_len`` (a length scorer is put in front of every step) and
``{target}``, which stands for the small review target file.
"""

import json

import numpy as np
import pytest
from selection_helpers import read_jsonl, write_jsonl

from thresher import selection
from thresher.core.steps import Filter, Scorer, Selector
from thresher.selection.registry import (
    STEP_TYPES,
    Fitted,
    Grouped,
    RankSelector,
    ScoreSelector,
    load_builtin_steps,
    score_names,
)

load_builtin_steps()
EXAMPLES = {"dsir": {"target": ["{target}"], "fraction": 0.2}}


@pytest.mark.parametrize("kind", sorted(STEP_TYPES))
def test_step_type_conforms(tmp_path, raw_path, target_path, kind):
    spec = STEP_TYPES[kind]
    example = EXAMPLES.get(kind, spec.example)
    if example is None:
        pytest.skip(f"step type {kind!r} registers no example")
    params = json.loads(json.dumps(example).replace("{target}", str(target_path)))
    rows = read_jsonl(raw_path)[:400]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    recipe = {
        "inputs": [str(source)],
        "batch_size": 64,
        "steps": [{"type": "length", "name": "_len"}, {"type": kind, **params}],
    }
    loaded = selection.load_recipe(recipe)
    step = spec.factory(kind, loaded.steps[1].params, selection.StepContext(seed=0))
    capabilities = Scorer | Filter | Selector | ScoreSelector | RankSelector | Fitted | Grouped
    assert isinstance(step, capabilities)
    assert spec.doc, "a step type needs a docstring (its first line is the type's help)"

    result = selection.run_recipe(recipe, tmp_path / "job", progress=False)
    kept = read_jsonl(result.output_path)
    by_id = {r["id"]: r for r in rows}
    assert len({r["id"] for r in kept}) == len(kept) <= len(rows)
    for row in kept:  # kept rows come back whole, with their scores
        assert {k: v for k, v in row.items() if k != "thresher"} == by_id[row["id"]]
        assert all(np.isfinite(v) for v in row["thresher"].values())
    counts = result.report.steps[1]
    assert counts.rows_in == 400 and counts.rows_out == len(kept)
    assert sum(counts.reasons.values()) == counts.rows_in - counts.rows_out
    if isinstance(step, Scorer):
        names = score_names(step)
        assert any(n in result.report.score_summary or n in kept[0]["thresher"] for n in names)
