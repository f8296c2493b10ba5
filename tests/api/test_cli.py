import re
import subprocess
import sys

import pytest

from thresher.api.cli import main

COMMANDS = [[], ["doctor"], ["serve"]]
EVERY_COMMAND = [
    ["doctor"],
    ["serve"],
    ["select"],
    ["dsir"],
    ["filter"],
    ["compress"],
    ["pool"],
    ["pool", "build"],
    ["pool", "search"],
]
DSIR = ["dsir", "--raw", "r.jsonl", "--target", "t.jsonl", "--out", "o.jsonl"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "thresher", *command, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_doctor_reports_models_and_device():
    result = subprocess.run(
        [sys.executable, "-m", "thresher", "doctor", "--device", "cpu"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for expected in ("ok    embedder", "ok    scorer", "ok    cl100k_base", "cache dir", "-> cpu"):
        assert expected in result.stdout
    # What compression runs in here, and why: measured (bf16 against fp32), with the threads.
    dtype = next(line for line in result.stdout.splitlines() if line.startswith("dtype"))
    assert dtype.split()[1] in ("float32", "bfloat16") and "than fp32 here" in dtype
    assert "threads" in dtype and "affinity" in result.stdout


def test_bad_device_is_one_line_and_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "thresher", "doctor", "--device", "tpu"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Unknown device 'tpu'" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_setting_stops_the_command_that_reads_it_not_help(monkeypatch, capsys):
    monkeypatch.setenv("THRESHER_LOG_LEVEL", "LOUD")
    main(["--help"])  # answers (and returns) while a setting is bad
    assert "Commands" in capsys.readouterr().out
    code, _, err = run_cli(capsys, ["serve"])
    assert code == 2 and err.count("\n") == 1 and "THRESHER_LOG_LEVEL" in err


def run_cli(capsys, args):
    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    return exited.value.code, out, err


# (arguments, what the one line must name); one or more usage errors of every command.
USAGE_ERRORS = [
    (["doctor", "--devise", "cpu"], "--device"),
    (["serve", "--port", "abc"], "--port"),
    (["serve", "--port", "99999"], "--port"),
    (["serve", "--workers", "0"], "--workers"),
    (["select"], "RECIPE"),
    (["select", "recipe.yaml", "--bogus", "x"], "--bogus"),
    (["dsir", "--raw", "r.jsonl", "--target", "t.jsonl", "--out", "o.jsonl"], "--num"),
    ([*DSIR, "--num", "0"], "--num"),
    ([*DSIR, "--num", "ten"], "--num"),
    ([*DSIR, "--nmu", "3"], "--num"),  # a misspelt flag: the line suggests the right one
    (["filter", "--out", "kept.jsonl"], "--input"),
    (["filter", "-i", "a.jsonl", "-o", "b.jsonl", "--budget", "0"], "--budget"),
    (["compress", "--rate", "x"], "--rate"),
    (["compress", "--target-tokens", "1.5"], "--target-tokens"),
    (["pool", "build", "--input", "demos.jsonl"], "--name"),
    (["pool", "search", "--name", "p", "--query", "q", "--k", "0"], "--k"),
    (["pool", "search", "--name", "p"], "--query"),
    (["pool", "explode"], "explode"),
    (["nosuchcommand"], "nosuchcommand"),
]


@pytest.mark.parametrize("args, names", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_a_usage_error_is_one_line_naming_the_flag_and_exit_2(capsys, args, names):
    code, out, err = run_cli(capsys, args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and names in lines[0], err
    assert "--help" in lines[0]  # the fix: where the right flags are listed
    assert "Traceback" not in err + out


def test_every_command_is_covered_by_a_usage_error():
    covered = {tuple(a[:2]) if a[0] == "pool" else (a[0],) for a, _ in USAGE_ERRORS}
    for command in EVERY_COMMAND:
        if command != ["pool"]:
            assert tuple(command) in covered, command


def test_a_value_checked_inside_a_command_is_one_line_too(capsys):
    code, _, err = run_cli(capsys, ["compress", "--rate", "5"])
    assert code == 2 and err.count("\n") == 1 and "rate" in err


def test_compress_names_a_folder_as_a_folder(capsys, tmp_path):
    # It said the folder "does not exist", which sends the user looking for a typo.
    code, _, err = run_cli(capsys, ["compress", str(tmp_path)])
    assert code == 2 and err.count("\n") == 1
    assert "is a folder, not a file" in err and "does not exist" not in err
    code, _, err = run_cli(capsys, ["compress", str(tmp_path / "nope.txt")])
    assert code == 2 and "does not exist" in err


TYPE_TAGS = re.compile(r"\b(INTEGER|TEXT|FLOAT|PATH|BOOLEAN|RANGE)\b|<(int|str|path|bool|float)")


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
def test_help_reads_at_80_columns_without_type_tags(command):
    result = subprocess.run(
        [sys.executable, "-m", "thresher", *command, "--help"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "COLUMNS": "80"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Usage: thresher")
    assert max(len(line) for line in lines) <= 80
    assert not TYPE_TAGS.search(result.stdout), result.stdout
    # Words wrap whole: no line ends inside a hyphenated word.
    assert not any(line.rstrip().endswith("-") and not line.rstrip().endswith(" -")
                   for line in lines), result.stdout  # fmt: skip
