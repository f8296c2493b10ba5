"""The settings reference (docs/settings.md) says what the settings classes say, every
``THRESHER_*`` variable the code reads is in it, and the README and the docs name no variable
that does not exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("thresher", "core", "api", "selection", "prompting", "compression")
VARIABLE = re.compile(r"THRESHER_[A-Z0-9][A-Z0-9_]*")


def _reference():
    spec = importlib.util.spec_from_file_location(
        "settings_reference", REPO / "docs" / "hooks" / "settings_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fields() -> dict[str, object]:
    from thresher.api.settings import ServiceSettings

    return dict(ServiceSettings.model_fields)


def _documented_names() -> set[str]:
    return {f"THRESHER_{name.upper()}" for name in _fields()}


def _test_suite_variables() -> set[str]:
    """Variables only the test suite and the Makefile read (documented in CONTRIBUTING.md)."""
    found: set[str] = set()
    for path in [*(REPO / "tests").rglob("*.py"), REPO / "Makefile"]:
        found |= set(VARIABLE.findall(path.read_text(encoding="utf-8")))
    return found - _documented_names()


def test_the_committed_reference_matches_the_settings_classes():
    message = _reference().stale_message()
    assert message is None, message


def test_every_setting_has_a_description_and_a_row():
    page = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    undescribed = [name for name, field in _fields().items() if not field.description]
    assert not undescribed, (
        f"settings without a description: {undescribed}; write a docstring under each field "
        "(the settings classes set use_attribute_docstrings)"
    )
    missing = [n for n in _fields() if f"| `THRESHER_{n.upper()}` |" not in page]
    assert not missing, f"settings missing from docs/settings.md: {missing}"


def test_every_variable_the_packages_read_is_documented():
    documented = _documented_names()
    unknown = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for name in set(VARIABLE.findall(path.read_text(encoding="utf-8"))) - documented:
                unknown[name] = str(path.relative_to(REPO))
    assert not unknown, (
        f"THRESHER_* variables used in the code but not in the settings reference: {unknown}; "
        "make them settings fields (core/settings.py or api/settings.py) and run "
        "`make docs-settings`"
    )


def test_readme_and_docs_name_only_real_variables():
    known = _documented_names() | _test_suite_variables()
    pages = [REPO / "README.md", REPO / "CONTRIBUTING.md", *(REPO / "docs").rglob("*.md")]
    stale = {
        f"{path.relative_to(REPO)}: {name}"
        for path in pages
        for name in VARIABLE.findall(path.read_text(encoding="utf-8"))
        if name not in known
    }
    assert not stale, f"documentation names variables that nothing reads: {sorted(stale)}"


def test_the_readme_settings_table_shows_the_real_defaults():
    reference = _reference()
    fields = _fields()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Settings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `THRESHER_([A-Z0-9_]+)` \| ([^|]*) \|", section, flags=re.M)
    assert len(rows) >= 10, "the README's settings table lost its rows"
    wrong = {
        name: (shown.strip(), reference.default_text(fields[name.lower()]))
        for name, shown in rows
        if shown.strip() != reference.default_text(fields[name.lower()])
    }
    assert not wrong, f"README defaults differ from the settings classes (shown, real): {wrong}"
