"""The command line as a user meets it: version, usage, help, and `python -m actors`."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from actors import __version__
from actors.cli import build_parser, main

PY = [sys.executable, "-m", "actors"]
TIMEOUT = 60


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PY, *args], capture_output=True, text=True, timeout=TIMEOUT)


def test_version_through_python_dash_m() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wgactors {__version__}"


def test_no_arguments_prints_usage_and_exits_2() -> None:
    result = run()
    assert result.returncode == 2
    assert result.stderr.startswith("usage: wgactors [-f]")
    assert "give an interface name or a command" in result.stderr
    assert "required: interface" not in result.stderr


def test_help_shows_every_form(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    usage = text.split("\n\n")[0]
    assert "wgactors [-f] [-v|-q] [--metrics ADDR:PORT] [--workers N|auto] IFACE" in usage
    assert "--workers N|auto" in usage.split("wgactors up ", 1)[1].split("\n")[0]
    assert "wgactors up " in usage and "CONF" in usage and "--metrics ADDR:PORT" in usage
    assert "wgactors status [--json | --prometheus] [IFACE]" in usage
    assert "wgactors --version" in usage
    assert "wireguard-go drop-in" in text


def test_every_subcommand_is_in_the_usage() -> None:
    """A subcommand added later (e.g. `stages`) shows up in the usage by itself."""
    parser = build_parser()
    usage = parser.format_usage()
    for name in ("up", "status"):
        assert f"wgactors {name}" in usage


@pytest.mark.parametrize(
    "argv",
    [
        ["-f"],
        ["up"],
        ["status", "--json", "--prometheus"],
        ["wg0", "extra"],
        ["up", "x", "--metrics", "nope"],
        ["up", "x", "--workers", "0"],
        ["-f", "--workers", "many", "wg0"],
    ],
)
def test_bad_command_lines_exit_2_with_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: wgactors")
    assert err.rstrip().splitlines()[-1].startswith("wgactors: ")


@pytest.mark.parametrize("argv", [["up", "x"], ["-f", "wg0"]])
def test_a_metrics_port_alone_says_what_was_expected(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--metrics", "9586"])
    assert info.value.code == 2
    last = capsys.readouterr().err.rstrip().splitlines()[-1]
    assert last == "wgactors: argument --metrics: '9586': expected ADDR:PORT"


def test_daemon_form_refuses_a_bad_interface_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-f", "no/slash"]) == 2
    assert "not a valid interface name" in capsys.readouterr().err


def test_single_threaded_does_not_take_workers(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One loop in one process, or a pipeline per worker: both at once is a bad command line
    (exit 2, one line), found before anything is set up; so is a bad WGACTORS_WORKERS."""
    conf = tmp_path / "wgc0.conf"
    conf.write_text("[Interface]\nPrivateKey = " + "AQEB" * 10 + "AQE=\n")
    conf.chmod(0o600)
    assert main(["up", str(conf), "--single-threaded", "--workers", "2"]) == 2
    assert "does not take --workers 2" in capsys.readouterr().err
    monkeypatch.setenv("WGACTORS_WORKERS", "lots")
    assert main(["up", str(conf)]) == 2
    assert "workers must be a number or auto" in capsys.readouterr().err
