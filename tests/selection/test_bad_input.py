import subprocess
import sys

import pytest
from selection_helpers import read_jsonl

from thresher import selection
from thresher.core.errors import ConfigError, InputError, NotFoundError


@pytest.fixture
def damaged(tmp_path, raw_path):
    """The first 40 raw rows with bad JSON on line 3, bad UTF-8 on line 7, no text on line 12."""
    lines = raw_path.read_bytes().splitlines(keepends=True)[:40]
    lines[2] = b'{"id": "broken", "text": "unterminated\n'
    lines[6] = b'{"id": "latin1", "text": "caf\xe9"}\n'
    lines[11] = b'{"id": "notext", "body": "wrong field"}\n'
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def recipe(path):
    return {
        "inputs": [{"path": str(path), "shape": "text"}],
        "steps": [{"type": "length"}, {"type": "threshold", "score": "length", "min": 0}],
    }


def test_bad_rows_are_counted_and_written_with_file_and_line(tmp_path, damaged):
    result = selection.run_recipe(recipe(damaged), tmp_path / "job", progress=False)
    rejects = read_jsonl(result.rejects_path)
    assert [(r["line"], r["source"]) for r in rejects] == [
        (3, str(damaged)),
        (7, str(damaged)),
        (12, str(damaged)),
    ]
    assert "bad JSON" in rejects[0]["error"]
    assert "UTF-8" in rejects[1]["error"]
    assert "'text'" in rejects[2]["error"] and "wrong field" in rejects[2]["raw"]
    assert result.report.rejects == 3 and result.report.rows_read == 37
    assert len(read_jsonl(result.output_path)) == 37
    assert "rejected 3 bad rows" in result.summary()


def test_strict_makes_the_first_bad_row_fatal(tmp_path, damaged):
    with pytest.raises(InputError) as info:
        selection.run_recipe(recipe(damaged), tmp_path / "job", progress=False, strict=True)
    assert f"{damaged}:3:" in str(info.value)
    # The same job, no longer strict, finishes in the same folder with the rows counted.
    result = selection.run_recipe(recipe(damaged), tmp_path / "job", progress=False)
    assert result.report.rejects == 3


def test_missing_input_file(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        selection.run_recipe(recipe(tmp_path / "absent.jsonl"), tmp_path / "job")


def test_cli_strict_is_one_line_and_exit_2(tmp_path, damaged):
    (tmp_path / "r.yaml").write_text(
        f"inputs: [{{path: '{damaged}', shape: text}}]\nsteps: [{{type: length}}]\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "thresher",
            "select",
            str(tmp_path / "r.yaml"),
            "--strict",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and f"{damaged}:3" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_cli_bad_recipe_key_is_one_line(tmp_path, raw_path):
    (tmp_path / "r.yaml").write_text(
        f"inputs: ['{raw_path}']\nsteps: [{{type: length, unit: x}}]\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "thresher", "select", str(tmp_path / "r.yaml")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "steps[0].unit" in run.stderr and "Traceback" not in run.stderr


def test_no_readable_row_is_an_error_naming_the_file_and_rejects_survive(tmp_path):
    path = tmp_path / "all_bad.jsonl"
    path.write_text("not json\n{also not\n")
    with pytest.raises(InputError, match="all_bad.jsonl") as info:
        selection.run_recipe(recipe(path), tmp_path / "job", progress=False)
    assert info.value.field == "inputs" and "rejected" in str(info.value)
    assert len(read_jsonl(tmp_path / "job" / "rejects.jsonl")) == 2
    assert not (tmp_path / "job" / "selected.jsonl").exists()


@pytest.mark.parametrize("content", [b"", b"\x00\x01\xff\xfe random bytes", b'[{"a": 1}]\n'])
def test_empty_random_or_array_input_is_an_error(tmp_path, content):
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match="in.jsonl"):
        selection.run_recipe(recipe(path), tmp_path / "job", progress=False)


def test_unknown_score_name_is_a_recipe_error(tmp_path, raw_path):
    steps = [{"type": "length"}, {"type": "threshold", "score": "lenght", "min": 3}]
    bad = {"inputs": [str(raw_path)], "steps": steps}
    with pytest.raises(ConfigError, match="lenght") as info:
        selection.run_recipe(bad, tmp_path / "job", progress=False)
    assert info.value.field == "steps[1].score" and "length" in str(info.value)
