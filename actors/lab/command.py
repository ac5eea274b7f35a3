"""Running commands for the lab: bounded in time, with errors that say what happened.

Every lab helper (tests, demo, bench, soak) shells out to the same tools a person would use
(``ip``, ``wg``, ``wireguard-go``, ``iperf3``, ``ping``), so a failure must carry the command,
its exit status and its stderr, and a hung tool must not hang the caller. The error classes
derive from both the lab's own :class:`LabError` and the standard library's exceptions, so
callers written against either (``except CalledProcessError``, ``except LabError``) keep working.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TERM_GRACE_S = 3.0  # seconds between SIGTERM and SIGKILL when stopping a process
KILL_WAIT_S = 2.0  # seconds to wait for a SIGKILLed process to be reaped
LOG_TAIL_LINES = 30


class LabError(RuntimeError):
    """A lab step failed; ``log`` names the log file worth showing, if there is one."""

    log: Path | None = None

    def __init__(self, message: str, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


class LabTimeout(LabError, TimeoutError):
    """A bounded wait ran out (an interface, a socket or a handshake did not appear)."""


class CommandError(subprocess.CalledProcessError, LabError):
    """A command exited non-zero; the message carries its stderr and stdout."""

    def __str__(self) -> str:
        parts = [super().__str__()]
        if self.stderr:
            parts.append(f"stderr:\n{self.stderr.rstrip()}")
        if self.output:
            parts.append(f"stdout:\n{self.output.rstrip()}")
        return "\n".join(parts)


class CommandTimeout(subprocess.TimeoutExpired, LabError):
    """A command did not finish within its time limit (it has been killed)."""


def run(
    cmd: Sequence[Any],
    *,
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,
    env_extra: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to completion, text mode, output captured.

    Non-zero exit with ``check`` raises :class:`CommandError`; running past ``timeout`` raises
    :class:`CommandTimeout` (``subprocess.run`` has killed the command by then).
    """
    argv = [str(a) for a in cmd]
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
            env=dict(os.environ, **env_extra) if env_extra else None,
        )
    except subprocess.TimeoutExpired as e:
        raise CommandTimeout(argv, timeout, e.output, e.stderr) from None
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


def stop_process(proc: subprocess.Popen[Any], grace: float = TERM_GRACE_S) -> int | None:
    """SIGTERM (the whole process group if it leads one), SIGKILL after ``grace``.

    Returns the exit status (None if even SIGKILL did not reap it in time). Never raises.
    """

    def _signal(sig: int) -> None:
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT_S)):
        if proc.poll() is not None:
            break
        _signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    return proc.poll()


def pinned(cpus: str | None) -> list[str]:
    """The ``taskset -c CPUS`` prefix that pins a command to a CPU list, if one is given."""
    return ["taskset", "-c", cpus] if cpus else []


def tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" if there is none)."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def write_secret(path: Path, content: str) -> Path:
    """Write ``content`` (a key, a config with a key) to a new mode-0600 file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content if content.endswith("\n") else content + "\n")
    return path
