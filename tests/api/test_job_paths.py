"""Every file a submitted recipe names stays inside the allowed folders (api/jobs/paths.py):
reads under the input roots or the job's own folder, the output inside the job's folder, a
judge only on a configured backend. Checked on the validated recipe, as the service does."""

from __future__ import annotations

import pytest

from thresher import selection
from thresher.api.jobs.paths import RecipeGuard
from thresher.core.errors import InputError, NotFoundError

TOP = {"type": "top_k", "score": "_len", "k": 2}


@pytest.fixture
def layout(tmp_path):
    """An allowed root with one input, a job folder, and a secret file outside both."""
    root, jobs, outside = tmp_path / "data", tmp_path / "jobs", tmp_path / "outside"
    for folder in (root, jobs / "a" / "input", jobs / "b" / "input", outside / "model"):
        folder.mkdir(parents=True)
    (root / "rows.jsonl").write_text('{"text": "x"}\n')
    (jobs / "b" / "input" / "theirs.jsonl").write_text('{"text": "y"}\n')
    (outside / "secret.jsonl").write_text('{"text": "s"}\n')
    (outside / "model" / "config.json").write_text("{}")
    (root / "link.jsonl").symlink_to(outside / "secret.jsonl")
    guard = RecipeGuard((root.resolve(),), frozenset({"local", "http://127.0.0.1:9/v1"}))
    return guard, root, jobs / "a", outside


def fill(value, **folders):
    """The recipe with ``{outside}`` and ``{jobs}`` replaced in every string."""
    if isinstance(value, str):
        return value.format(**folders)
    if isinstance(value, dict):
        return {k: fill(v, **folders) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, **folders) for v in value]
    return value


def check(layout, recipe, inputs_field=None):
    guard, root, job, _ = layout
    data = selection.load_recipe({"base_dir": str(root), **recipe}).to_dict()
    guard.check(data, job, inputs_field)


def test_paths_inside_the_roots_pass(layout):
    _, root, job, _ = layout
    (job / "input" / "mine.jsonl").write_text('{"text": "z"}\n')
    check(layout, {"inputs": ["rows.jsonl"], "steps": [TOP], "output": {"path": "out/k.jsonl"}})
    check(layout, {"inputs": [str(job / "input" / "mine.jsonl")]})  # the job's own upload
    judge = {"type": "judge", "backend": "http://127.0.0.1:9/v1/", "model": "org/judge"}
    check(layout, {"inputs": ["rows.jsonl"], "steps": [judge, {**TOP, "score": "judge"}]})
    dsir = {"type": "dsir", "target": [str(root / "rows.jsonl")], "num": 1}
    check(layout, {"inputs": ["rows.jsonl"], "steps": [dsir]})


@pytest.mark.parametrize(
    "recipe, field",
    [
        ({"inputs": ["{outside}/secret.jsonl"]}, "recipe.inputs[0].path"),
        ({"inputs": ["rows.jsonl", "../outside/secret.jsonl"]}, "recipe.inputs[1].path"),
        ({"inputs": ["link.jsonl"]}, "recipe.inputs[0].path"),  # a symlink out of the root
        ({"inputs": ["{jobs}/b/input/theirs.jsonl"]}, "recipe.inputs[0].path"),  # another job
        ({"inputs": ["rows.jsonl"], "base_dir": "{outside}"}, "recipe.base_dir"),
        ({"inputs": ["rows.jsonl"], "output": {"path": "{outside}/w.jsonl"}}, "recipe.output.path"),
        ({"inputs": ["rows.jsonl"], "output": {"path": "../../w.jsonl"}}, "recipe.output.path"),
        (
            {"inputs": ["rows.jsonl"],
             "steps": [{"type": "dsir", "target": ["{outside}/secret.jsonl"], "num": 1}]},
            "recipe.steps[0].target[0].path",
        ),
        (
            {"inputs": ["rows.jsonl"], "steps": [{"type": "classifier", "path": "{outside}"}]},
            "recipe.steps[0].path",
        ),
        (
            {"inputs": ["rows.jsonl"],
             "steps": [{"type": "perplexity", "model": "{outside}/model"}]},
            "recipe.steps[0].model",
        ),
        (
            {"inputs": ["rows.jsonl"],
             "steps": [{"type": "judge", "backend": "http://169.254.169.254/v1"}]},
            "recipe.steps[0].backend",
        ),
    ],
)  # fmt: skip
def test_anything_outside_is_refused_naming_the_field(layout, recipe, field):
    _, _, job, outside = layout
    with pytest.raises(InputError) as caught:
        check(layout, fill(recipe, outside=outside, jobs=job.parent))
    assert caught.value.field == field


def test_the_request_field_is_named_when_it_set_the_inputs(layout):
    _, _, _, outside = layout
    with pytest.raises(InputError) as caught:
        check(layout, {"inputs": [str(outside / "secret.jsonl")]}, "input_path")
    assert caught.value.field == "input_path"
    with pytest.raises(NotFoundError) as missing:
        check(layout, {"inputs": ["nope.jsonl"]}, "input_path")
    assert missing.value.field == "input_path"


@pytest.mark.parametrize(
    "recipe, field",
    [
        ({"inputs": ["rows\x00.jsonl"]}, "recipe.inputs[0].path"),
        ({"inputs": ["rows.jsonl"], "base_dir": "da\x00ta"}, "recipe.base_dir"),
        ({"inputs": ["rows.jsonl"], "output": {"path": "k\x00.jsonl"}}, "recipe.output.path"),
        (
            {"inputs": ["rows.jsonl"], "steps": [{"type": "classifier", "path": "m\x00"}]},
            "recipe.steps[0].path",
        ),
        (
            {"inputs": ["rows.jsonl"], "steps": [{"type": "perplexity", "model": "m\x00"}]},
            "recipe.steps[0].model",
        ),
    ],
)
def test_a_nul_character_in_a_file_name_is_refused_naming_the_field(layout, recipe, field):
    # The fuzzer found it: Python raises ValueError on such a path, which was a 500.
    with pytest.raises(InputError) as caught:
        check(layout, recipe)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "name, stored",
    [
        ("r" * 300 + ".jsonl", "r" * 80 + ".jsonl"),  # 306 characters: a 500 before
        ("../../etc/passwd", "passwd"),
        ("C:\\data\\rows.jsonl", "rows.jsonl"),
        (".hidden.parquet", "hidden.parquet"),
        ("my rows (v2).JSONL.gz", "my_rows_v2_.jsonl.gz"),
        ("...", "input.jsonl"),
        (None, "input.jsonl"),
    ],
)
def test_upload_names_are_made_safe_and_short(name, stored):
    from thresher.api.jobs.paths import upload_name

    assert upload_name(name) == stored


def test_an_upload_name_with_a_control_character_is_refused():
    from thresher.api.jobs.paths import upload_name
    from thresher.core.errors import InputError

    with pytest.raises(InputError) as caught:
        upload_name("bad\x01name.jsonl")
    assert caught.value.field == "file"
