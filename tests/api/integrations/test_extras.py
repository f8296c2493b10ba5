"""Each adapter sits behind its own extra: importing ``thresher.api.integrations`` imports no host
package, and an adapter whose host is missing raises an ImportError naming the extra."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import pytest

HOSTS = [
    ("thresher.api.integrations.langchain", "langchain_core", "thresher[langchain]"),
    ("thresher.api.integrations.llama_index", "llama_index", "thresher[llama-index]"),
    ("thresher.api.integrations.litellm", "litellm", "thresher[litellm]"),
]


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_package_imports_no_host():
    done = run(
        "import sys, thresher.api.integrations, thresher.api.integrations.embedded; "
        "print([m for m in ('langchain_core', 'llama_index', 'litellm', 'torch') "
        "if m in sys.modules])"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("module", "host", "extra"), HOSTS)
def test_a_missing_host_names_its_extra(module, host, extra):
    # sys.modules[name] = None makes that import fail, as on a machine without the package.
    done = run(f"import sys; sys.modules[{host!r}] = None; import {module}")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "DependencyMissingError" in last and f"pip install '{extra}'" in last


def test_litellm_is_not_in_the_shared_venv():
    # LiteLLM conflicts with two pins of requirements.lock (see the Makefile's litellm target):
    # here, importing the guardrail is the ImportError a user without the extra sees.
    if importlib.util.find_spec("litellm") is not None:
        pytest.skip("litellm is installed in this venv")
    with pytest.raises(ImportError, match=r"pip install 'thresher\[litellm\]'"):
        importlib.import_module("thresher.api.integrations.litellm")
