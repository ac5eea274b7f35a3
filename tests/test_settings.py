"""Settings live in one module, the README's table lists each, and test-only hooks stay off
unless explicitly enabled."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from actors import settings
from actors.faults import parse_faults

ROOT = Path(__file__).resolve().parent.parent


def test_readme_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Settings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \|", section, re.MULTILINE)
    assert rows == [s.name for s in settings.SETTINGS]
    for s in settings.SETTINGS:
        if s.test_only:
            row = next(line for line in section.splitlines() if line.startswith(f"| `{s.name}`"))
            assert "test-only" in row


def test_no_module_reads_a_wgactors_variable_by_itself() -> None:
    """Every WGACTORS_* name appears in the package only in settings.py."""
    for path in (ROOT / "actors").rglob("*.py"):
        if path.name == "settings.py":
            continue
        text = path.read_text()
        for match in re.finditer(r"[\"']WGACTORS_[A-Z_]+[\"']", text):
            pytest.fail(f"{path.relative_to(ROOT)} names {match.group()}: use actors.settings")


def test_test_only_hooks_are_ignored_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(settings.TEST_HOOKS.name, raising=False)
    monkeypatch.setenv(settings.INJECT_FAULTS.name, "decrypt:always")
    monkeypatch.setenv(settings.TEST_UNBATCHED.name, "1")
    assert parse_faults() == {}
    assert not settings.is_set(settings.TEST_UNBATCHED)
    monkeypatch.setenv(settings.TEST_HOOKS.name, "1")
    assert set(parse_faults()) == {"decrypt"}
    assert settings.is_set(settings.TEST_UNBATCHED)


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("yes", True), ("0", False), ("", False), ("false", False)]
)
def test_flags(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv(settings.SINGLE_THREADED.name, value)
    assert settings.is_set(settings.SINGLE_THREADED) is expected
