"""The drop-in form's fork: the parent returns once the child reports, and never hangs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from actors.daemon import READY_STOP_GRACE

WAIT = 10.0 + READY_STOP_GRACE  # seconds any bounded wait below may take


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _run_parent(tmp_path: Path, child_body: str, ready_timeout: float) -> tuple[int, str, int]:
    """Run daemonize() in a fresh interpreter; the child writes its pid, then does
    ``child_body``. Returns the parent's exit status and stderr, and the child's pid."""
    pidfile = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import os, time
        from actors.daemon import daemonize
        notify = daemonize(ready_timeout={ready_timeout})
        open({str(pidfile)!r}, "w").write(str(os.getpid()))
        {child_body}
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=WAIT
    )
    deadline = time.monotonic() + WAIT  # the child may write it after the parent is gone
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return result.returncode, result.stderr, int(pidfile.read_text())


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


def test_the_parent_gives_up_on_a_child_that_never_reports_and_stops_it(tmp_path: Path) -> None:
    """A child stalled before reporting (here: asleep, with SIGTERM ignored) must not hang
    `wg-quick up`: the parent exits 1 after the timeout, saying so, and the child is killed."""
    status, stderr, child = _run_parent(
        tmp_path,
        "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
        ready_timeout=1.0,
    )
    assert status == 1
    assert "did not report within 1 s" in stderr
    assert _wait_gone(child), "the stalled child outlived its parent"


def test_the_parent_exits_0_when_the_child_reports_ready(tmp_path: Path) -> None:
    status, stderr, child = _run_parent(
        tmp_path, "notify(None); time.sleep(0.2); os._exit(0)", ready_timeout=WAIT
    )
    assert (status, stderr) == (0, "")
    assert _wait_gone(child)


def test_the_parent_prints_the_childs_reason_and_exits_1(tmp_path: Path) -> None:
    status, stderr, child = _run_parent(
        tmp_path, "notify('cannot open UDP port 1: denied'); os._exit(1)", ready_timeout=WAIT
    )
    assert status == 1
    assert stderr.strip() == "wgactors: cannot open UDP port 1: denied"
    assert _wait_gone(child)


def test_a_child_that_dies_silently_is_reported(tmp_path: Path) -> None:
    status, stderr, _ = _run_parent(tmp_path, "os._exit(3)", ready_timeout=WAIT)
    assert status == 1
    assert "exited during start-up" in stderr
