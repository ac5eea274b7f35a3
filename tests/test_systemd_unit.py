"""config/wgactors@.service: the directives the daemon relies on, and systemd's own check."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "config" / "wgactors@.service"
TIMEOUT = 60


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_says_what_the_daemon_does() -> None:
    d = directives()
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


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing (scripts/setup installs systemd)"
    launcher = shutil.which("wgactors") or str(ROOT / "scripts" / "wgactors")
    text = UNIT.read_text().replace("ExecStart=wgactors ", f"ExecStart={launcher} ")
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
    assert result.returncode == 0 or not complaints, complaints
    assert not complaints, complaints
