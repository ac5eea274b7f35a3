"""The systemd unit: the directives the daemon relies on, the shipped file and `wgactors
systemd-unit` from one template, and systemd's own check of what the command prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actors.systemd_unit import GENERIC_COMMAND, render

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "config" / "wgactors@.service"
LAUNCHER = ROOT / "scripts" / "wgactors"
TIMEOUT = 60


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_says_what_the_daemon_does() -> None:
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["ExecStart"] == ["wgactors up /etc/wireguard/%i.conf"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["RestartPreventExitStatus"] == ["2"]  # a bad file: restarting cannot help
    assert d["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"]
    assert "WG_ENDPOINT_RESOLUTION_RETRIES=infinity" in d["Environment"]
    for hardening in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID"):
        assert d[hardening] == ["yes"], hardening
    assert d["ProtectSystem"] == ["strict"]
    assert d["DeviceAllow"] == ["/dev/net/tun rw"]
    assert d["RuntimeDirectory"] == ["wireguard"]  # the UAPI socket's directory stays writable


def test_the_shipped_file_is_the_template_rendered_for_wgactors_on_the_path() -> None:
    """One source: regenerate config/wgactors@.service with
    python -c 'from actors.systemd_unit import *; print(render(GENERIC_COMMAND), end="")'"""
    assert UNIT.read_text() == render(GENERIC_COMMAND)


def printed_unit() -> str:
    # An unusable CPU list: a wgactors without the command would take "systemd-unit" for an
    # interface name, and must then fail before it creates anything.
    guard = {"WGACTORS_CPUS": "not-a-cpu-list"}
    result = subprocess.run(
        [str(LAUNCHER), "systemd-unit"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd="/",
        env={**os.environ, **guard},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def verify(tmp_path: Path, text: str) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing (scripts/setup installs systemd)"
    instance = tmp_path / "wgactors@wgtest.service"
    instance.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(instance)], capture_output=True, text=True, timeout=TIMEOUT
    )
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "wgactors@" in line  # other units on the machine may have their own problems
    ]
    assert not complaints, complaints


def test_systemd_unit_prints_the_unit_for_this_installation(tmp_path: Path) -> None:
    text = printed_unit()
    d = directives(text)
    exec_start = d["ExecStart"][0].split()
    # the interpreter that runs this checkout (its venv's python, not resolved), by full path
    assert Path(exec_start[0]).is_absolute() and os.access(exec_start[0], os.X_OK)
    assert exec_start[1:] == ["-m", "actors.cli", "up", "/etc/wireguard/%i.conf"]
    # the shipped file but for the command (and the PYTHONPATH a checkout may need)
    shipped = UNIT.read_text().splitlines()
    differ = [line for line in text.splitlines() if line not in shipped]
    assert differ[0].startswith("ExecStart="), differ
    assert all(line.startswith("Environment=PYTHONPATH=") for line in differ[1:]), differ
    assert len(text.splitlines()) == len(shipped) + len(differ) - 1
    verify(tmp_path, text)
    # what the unit runs is wgactors: the command line starts it
    version = subprocess.run(
        [*exec_start[:3], "--version"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd="/",
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        | {e.split("=", 1)[0]: e.split("=", 1)[1] for e in d["Environment"]},
    )
    assert version.returncode == 0 and version.stdout.startswith("wgactors "), version.stderr


def test_the_shipped_file_fails_systemd_analyze_off_the_search_path(tmp_path: Path) -> None:
    """Why the command exists: `ExecStart=wgactors` names nothing systemd can find unless
    wgactors is installed system-wide."""
    if any(Path(d, "wgactors").exists() for d in ("/usr/local/bin", "/usr/bin", "/bin")):
        pytest.skip("wgactors is installed on systemd's search path here")
    with pytest.raises(AssertionError):
        verify(tmp_path, UNIT.read_text())


def test_an_interpreter_path_with_blanks_and_an_environment_are_quoted(tmp_path: Path) -> None:
    odd = tmp_path / "my venv %i $HOME" / "bin"
    odd.mkdir(parents=True)
    (odd / "python").symlink_to(sys.executable)
    text = render([str(odd / "python"), "-m", "actors.cli"], {"PYTHONPATH": "/opt/wg actors"})
    assert f'ExecStart="{tmp_path}/my venv %%i $HOME/bin/python" -m actors.cli up' in text
    assert 'Environment="PYTHONPATH=/opt/wg actors"' in text
    verify(tmp_path, text)
