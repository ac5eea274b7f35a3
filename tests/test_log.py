"""Log levels from the command line and the environment, and the journal's line format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors import settings
from actors.log import resolve_level

TIMEOUT = 60


@pytest.mark.parametrize(
    ("own", "wg", "verbosity", "expected"),
    [
        (None, None, 0, "INFO"),
        (None, "verbose", 0, "DEBUG"),
        (None, "debug", 0, "DEBUG"),
        (None, "error", 0, "ERROR"),
        (None, "silent", 0, "SILENT"),
        (None, "nonsense", 0, "INFO"),
        ("WARNING", "debug", 0, "WARNING"),  # our own variable wins
        ("warning", None, 1, "DEBUG"),  # and the command line wins over both
        (None, "silent", -1, "WARNING"),
    ],
)
def test_level_precedence(
    monkeypatch: pytest.MonkeyPatch, own: str | None, wg: str | None, verbosity: int, expected: str
) -> None:
    for setting, value in ((settings.LOG_LEVEL, own), (settings.WG_LOG_LEVEL, wg)):
        if value is None:
            monkeypatch.delenv(setting.name, raising=False)
        else:
            monkeypatch.setenv(setting.name, value)
    assert resolve_level(verbosity) == expected


SCRIPT = """
from loguru import logger
from actors.log import setup_logging
setup_logging(name="wgj0")
logger.info("hello")
logger.warning("careful")
logger.error("broken")
logger.debug("hidden at INFO")
"""


def _log_to_file(tmp_path: Path, journal: bool, **env: str) -> str:
    out = tmp_path / "stderr.txt"
    with open(out, "wb") as fh:
        st = os.fstat(fh.fileno())
        extra = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"} if journal else {}
        clean = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "JOURNAL_STREAM")}
        clean.pop(settings.LOG_LEVEL.name, None)
        subprocess.run(
            [sys.executable, "-c", SCRIPT],
            stderr=fh,
            env={**clean, **extra, **env},
            timeout=TIMEOUT,
            check=True,
        )
    return out.read_text()


def test_journal_stream_gives_priority_prefixes_and_no_timestamps(tmp_path: Path) -> None:
    lines = _log_to_file(tmp_path, journal=True).splitlines()
    assert lines == ["<6>wgj0: hello", "<4>wgj0: careful", "<3>wgj0: broken"]


def test_a_journal_stream_of_another_file_is_not_ours(tmp_path: Path) -> None:
    """JOURNAL_STREAM is inherited; it only counts when stderr is that very stream."""
    text = _log_to_file(tmp_path, journal=False, JOURNAL_STREAM="1:2")
    lines = text.splitlines()
    assert len(lines) == 3
    assert all(" wgj0: " in line and not line.startswith("<") for line in lines)
    assert lines[0].endswith("INFO    wgj0: hello")


def test_wireguard_go_log_level_silent(tmp_path: Path) -> None:
    assert _log_to_file(tmp_path, journal=False, LOG_LEVEL="silent") == ""


FATAL_CASES = {
    "missing-file": (["up", "/nonexistent/wgj9.conf"], 2),
    "bad-name": (["bad/name"], 2),
    "bad-option": (["up", "--no-such-option", "x.conf"], 2),
    "nothing": ([], 2),
    # the drop-in parent reports its child's failure (an unusable CPU list, no root needed)
    "child-failed": (["wgj9"], 1),
}


@pytest.mark.parametrize("case", sorted(FATAL_CASES))
def test_fatal_start_up_errors_carry_the_error_priority_in_the_journal(
    tmp_path: Path, case: str
) -> None:
    """Lines printed outside the logger (before it is set up, or by the drop-in's parent) are
    errors too: `journalctl -p err` must show them."""
    argv, status = FATAL_CASES[case]
    out = tmp_path / "stderr.txt"
    with open(out, "wb") as fh:
        st = os.fstat(fh.fileno())
        clean = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "JOURNAL_STREAM")}
        for setting in settings.SETTINGS:
            clean.pop(setting.name, None)
        env = {
            **clean,
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
            settings.CPUS.name: "not-a-cpu-list",
        }
        result = subprocess.run(
            [sys.executable, "-m", "actors.cli", *argv],
            stderr=fh,
            stdout=subprocess.DEVNULL,
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            timeout=TIMEOUT,
        )
    text = out.read_text()
    assert result.returncode == status, text
    errors = [line for line in text.splitlines() if "wgactors: " in line]
    assert errors, text
    assert all(line.startswith("<3>wgactors: ") for line in errors), text
