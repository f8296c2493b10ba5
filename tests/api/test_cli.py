import subprocess
import sys

import pytest

COMMANDS = [[], ["doctor"], ["serve"]]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "api", *command, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_doctor_reports_models_and_device():
    result = subprocess.run(
        [sys.executable, "-m", "api", "doctor", "--device", "cpu"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for expected in ("ok    embedder", "ok    scorer", "ok    cl100k_base", "cache dir", "-> cpu"):
        assert expected in result.stdout


def test_bad_device_is_one_line_and_exit_2():
    result = subprocess.run(
        [sys.executable, "-m", "api", "doctor", "--device", "tpu"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Unknown device 'tpu'" in result.stderr and "Traceback" not in result.stderr
