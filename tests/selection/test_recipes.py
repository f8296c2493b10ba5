import json

import numpy as np
import pytest
from selection_helpers import read_jsonl

from thresher import selection
from thresher.core.errors import ConfigError, NotFoundError
from thresher.selection.registry import STEP_TYPES, StepParams, register_step


def recipe(path, *steps, **extra):
    return {"inputs": [str(path)], "steps": list(steps), **extra}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"stepz": []}, "stepz"),
        ({"steps": [{"type": "threshold", "score": "length", "min": "abc"}]}, "steps[0].min"),
        ({"steps": [{"type": "threshold", "score": "length", "mn": 3}]}, "steps[0].mn"),
        ({"steps": [{"type": "no-such-step"}]}, "steps[0].type"),
        ({"steps": [{"type": "threshold", "score": "x"}]}, "steps[0]"),
        ({"batch_size": 0}, "batch_size"),
        ({"output": {"scores": "everywhere"}}, "output.scores"),
        ({"steps": [{"type": "length"}, {"type": "length"}]}, "steps"),
    ],
)
def test_bad_recipes_name_the_key(raw_path, bad, field):
    with pytest.raises(ConfigError) as info:
        selection.load_recipe({"inputs": [str(raw_path)], **bad})
    assert info.value.field.startswith(field)
    assert field.split(".")[-1].split("[")[0] in str(info.value)


def test_yaml_recipe_resolves_paths_next_to_it(tmp_path, raw_path):
    (tmp_path / "raw.jsonl").write_bytes(raw_path.read_bytes())
    (tmp_path / "r.yaml").write_text(
        "inputs: [raw.jsonl]\nsteps:\n  - type: length\n  - {type: top_k, score: length, k: 7}\n"
    )
    result = selection.run_recipe(tmp_path / "r.yaml", tmp_path / "out", progress=False)
    assert len(read_jsonl(result.output_path)) == 7


def test_missing_recipe_file_is_not_found(tmp_path):
    with pytest.raises(NotFoundError):
        selection.load_recipe(tmp_path / "nope.yaml")


class VowelParams(StepParams):
    min_ratio: float = 0.0


@register_step("test-vowel-ratio", params=VowelParams, example={"min_ratio": 0.3})
class VowelRatio:
    """Scores the share of vowels among letters and drops rows below ``min_ratio``."""

    def __init__(self, name, params, context):
        self.name = name
        self.min_ratio = params.min_ratio

    def score(self, records):
        out = []
        for r in records:
            letters = [c for c in r.content.lower() if c.isalpha()]
            out.append(sum(c in "aeiou" for c in letters) / max(1, len(letters)))
        return np.array(out)

    def keep(self, records):
        mask = np.array([r.scores[self.name] >= self.min_ratio for r in records])
        return mask, [None if m else "too few vowels" for m in mask]


def test_a_step_registered_elsewhere_runs_without_engine_changes(tmp_path, raw_path):
    assert "test-vowel-ratio" in STEP_TYPES
    result = selection.run_recipe(
        recipe(raw_path, {"type": "test-vowel-ratio", "min_ratio": 0.38}),
        tmp_path,
        progress=False,
    )
    kept = read_jsonl(result.output_path)
    assert kept and all(row["thresher"]["test-vowel-ratio"] >= 0.38 for row in kept)
    step = result.report.steps[0]
    assert step.rows_in == 3000 and step.reasons == {"too few vowels": 3000 - len(kept)}


def test_recipe_model_and_dict_give_the_same_job(tmp_path, raw_path):
    data = recipe(raw_path, {"type": "length"}, {"type": "top_k", "score": "length", "k": 5})
    a = selection.run_recipe(data, tmp_path / "a", progress=False)
    b = selection.run_recipe(selection.load_recipe(data), tmp_path / "b", progress=False)
    assert a.output_path.read_bytes() == b.output_path.read_bytes()


@register_step("test-first-of-each-text", example={})
class FirstOfEachText:
    """Keeps the first record of each distinct lower-cased text (a record-level selector)."""

    def __init__(self, name, params, context):
        self.name = name

    def select(self, records, k=None):
        seen, kept = set(), []
        for record in records:
            key = " ".join(record.content.lower().split())
            if key not in seen:
                seen.add(key)
                kept.append(record)
        return kept[:k] if k is not None else kept


def test_record_selectors_see_earlier_scores_and_drop_the_rest(tmp_path, raw_path):
    rows = read_jsonl(raw_path)[:100]
    twice = rows + [{**r, "id": r["id"] + "-copy", "text": r["text"].upper()} for r in rows[:30]]
    source = tmp_path / "dupes.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in twice))
    result = selection.run_recipe(
        recipe(source, {"type": "length"}, {"type": "test-first-of-each-text"}),
        tmp_path / "job",
        progress=False,
    )
    kept = read_jsonl(result.output_path)
    assert [r["id"] for r in kept] == [r["id"] for r in rows]
    assert all("length" in r["thresher"] for r in kept)
    assert result.report.steps[1].reasons == {"not selected by test-first-of-each-text": 30}


def test_two_worker_processes_match_one(tmp_path, raw_path, target_path):
    data = recipe(
        raw_path,
        {"type": "length"},
        {"type": "threshold", "score": "length", "min": 6},
        {"type": "dsir", "target": [str(target_path)], "num": 100},
        shard_bytes=150_000,
        batch_size=300,
    )
    one = selection.run_recipe(data, tmp_path / "one", progress=False)
    two = selection.run_recipe({**data, "workers": 2}, tmp_path / "two", progress=False)
    assert one.output_path.read_bytes() == two.output_path.read_bytes()


@register_step("test-exact-dedup", example={})
class ExactDedup:
    """Drops rows whose normalised text appeared at an earlier position (fit by concatenation)."""

    fit_reduce = "concat"

    def __init__(self, name, params, context):
        self.name = name

    def fit_stats(self, records):
        import hashlib

        keys = [
            int.from_bytes(
                hashlib.blake2b(
                    " ".join(r.content.lower().split()).encode(), digest_size=7
                ).digest(),
                "big",
            )
            for r in records
        ]
        return np.array(
            [[r.metadata["pos"], k] for r, k in zip(records, keys, strict=True)], dtype=np.int64
        ).reshape(-1, 2)

    def fit_from_stats(self, total):
        order = np.argsort(total[:, 0], kind="stable")
        _, first = np.unique(total[order, 1], return_index=True)
        self.keepers_ = set(total[order[first], 0].tolist())

    def keep(self, records):
        mask = np.array([r.metadata["pos"] in self.keepers_ for r in records], dtype=bool)
        return mask, [None if m else "exact duplicate" for m in mask]


@pytest.mark.parametrize("workers", [1, 2])
def test_concatenated_fit_statistics_drive_a_streaming_dedup(tmp_path, raw_path, workers):
    rows = read_jsonl(raw_path)[:400]
    copies = [{**r, "id": r["id"] + "-copy", "text": "  " + r["text"].upper()} for r in rows[::8]]
    source = tmp_path / "dupes.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows + copies))
    data = recipe(
        source, {"type": "test-exact-dedup"}, shard_bytes=40_000, batch_size=64, workers=workers
    )
    result = selection.run_recipe(data, tmp_path / "job", progress=False)
    assert [r["id"] for r in read_jsonl(result.output_path)] == [r["id"] for r in rows]
    assert result.report.steps[0].reasons == {"exact duplicate": len(copies)}
