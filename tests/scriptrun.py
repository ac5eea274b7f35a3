"""Running the project's own scripts (demo, bench, soak) from tests, and checking what they
leave behind. Each script cleans up on SIGTERM, so a script that overruns its time gets one
before it is killed, and the test fails with everything it printed."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIGTERM_GRACE = 30.0  # seconds a script gets to clean up after SIGTERM


def run_script(name: str, *args: str, timeout: float) -> tuple[int, str]:
    """Run ``scripts/NAME ARGS``; its exit status and its output (stdout and stderr)."""
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / name), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=SIGTERM_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"scripts/{name} {' '.join(args)} took more than {timeout:g} s:\n{output}")
    return proc.returncode, output


def namespaces() -> set[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def cmdlines() -> dict[int, str]:
    """PID -> command line of every process (that is still there to read)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        found[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return found
