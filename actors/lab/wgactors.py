"""wgactors itself, run the way a person runs it (``scripts/wgactors up CONF``) in a namespace."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import settings
from .command import LabError, LabTimeout, pinned, write_secret
from .netns import POLL_S, Netns
from .wireguard_go import WG_SOCKET_DIR

ROOT = Path(__file__).resolve().parents[2]  # the checkout (actors/lab/ is two levels down)
LAUNCHER = ROOT / "scripts" / "wgactors"
VENV_PYTHON = Path(
    ".venv", "bin", "python"
)  # a checkout's own interpreter, as its launcher finds it
START_TIMEOUT = 10.0  # seconds for the daemon to log that it is up
STOP_TIMEOUT = 10.0  # seconds for a SIGTERMed daemon to exit
KILL_WAIT_S = 5.0
UP_MARKER = "up: UDP port"  # the daemon's INFO line once the interface and socket are ready
# Environment variables that change what `wgactors up` runs; demo, bench and soak run it plain.
# What a "plain" daemon must not inherit from the caller: every variable wgactors reads.
DAEMON_ENV_VARS = tuple(s.name for s in settings.SETTINGS)


_own_log_dirs: list[Path] = []  # log dirs made for daemons, removed when the interpreter exits


@atexit.register
def _remove_own_log_dirs() -> None:
    for path in _own_log_dirs:
        shutil.rmtree(path, ignore_errors=True)


def launcher_argv(checkout: Path | None = None) -> list[str]:
    """How to start wgactors: this checkout's launcher, else this interpreter's ``actors.cli``.

    With ``checkout`` (another checkout of wgactors, e.g. a ``git worktree`` of an older
    commit, for a before-and-after bench): that checkout's launcher when it has a ``.venv`` of
    its own; otherwise this interpreter runs that checkout's ``actors.cli``, its directory first
    on the path as the launcher would put it, because the launcher would fall back to a system
    Python that lacks the dependencies.
    """
    if checkout is None:
        if LAUNCHER.exists():
            return [str(LAUNCHER)]
        return [sys.executable, "-m", "actors.cli"]
    launcher = checkout / "scripts" / "wgactors"
    if not launcher.is_file():
        raise LabError(f"{checkout} has no scripts/wgactors: not a wgactors checkout")
    if (checkout / VENV_PYTHON).exists():
        return [str(launcher)]
    return ["env", f"PYTHONPATH={checkout}", sys.executable, "-m", "actors.cli"]


def write_conf(
    directory: Path,
    iface: str,
    interface: Mapping[str, Any],
    peers: Sequence[Mapping[str, Any]],
) -> Path:
    """A wg-quick file ``DIRECTORY/IFACE.conf`` (mode 0600); None values are left out."""
    lines = ["[Interface]"] + [f"{k} = {v}" for k, v in interface.items() if v is not None]
    for peer in peers:
        lines += ["", "[Peer]"] + [f"{k} = {v}" for k, v in peer.items() if v is not None]
    return write_secret(directory / f"{iface}.conf", "\n".join(lines))


def plain_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the variables that change what wgactors runs."""
    base = {k: v for k, v in os.environ.items() if k not in DAEMON_ENV_VARS}
    return {**base, **(env or {})}


class Wgactors:
    """``scripts/wgactors up CONF`` running in ``ns``; a context manager.

    ``extra`` are more command-line arguments and ``env`` more environment variables; with
    ``plain`` the ``WGACTORS_*`` variables that change what runs are dropped first. With
    ``verbose`` the daemon logs at debug level (``-v``); the log goes to ``log_dir`` (default a
    temp dir of its own, removed by :meth:`cleanup`); ``cpus`` pins it (``taskset -c``); ``cwd``
    is its working directory (default this process's). ``checkout`` runs another checkout's
    wgactors (see :func:`launcher_argv`).
    """

    def __init__(
        self,
        ns: Netns,
        conf: Path,
        *extra: str,
        env: Mapping[str, str] | None = None,
        verbose: bool = True,
        log_dir: Path | None = None,
        plain: bool = False,
        cpus: str | None = None,
        checkout: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        # The daemon reads its test-only settings (fault plans, forced fallbacks) only with
        # WGACTORS_TEST_HOOKS=1; the lab is test tooling, so it turns them on.
        hooks = {} if plain else {settings.TEST_HOOKS.name: "1"}
        self.env = {**(plain_env() if plain else os.environ), **hooks, **(env or {})}
        self.ns = ns
        self.conf = conf
        self.iface = conf.stem
        self.extra = extra
        self.verbose = verbose
        self.cpus = cpus
        self.checkout = checkout
        self.cwd = cwd  # the daemon's working directory (systemd starts it in /)
        self._own_logdir = log_dir is None
        self._logdir = log_dir or Path(tempfile.mkdtemp(prefix="wga-log-"))
        if self._own_logdir:
            _own_log_dirs.append(self._logdir)
        self.log_path = self._logdir / f"wgactors-{self.iface}.log"
        self.proc: subprocess.Popen[Any] | None = None

    def start(self, *, wait_up: bool = True) -> Wgactors:
        flags = ["-v"] if self.verbose else []
        with open(self.log_path, "wb") as log:
            self.proc = self.ns.popen(
                *pinned(self.cpus),
                *launcher_argv(self.checkout),
                "up",
                str(self.conf),
                *flags,
                *self.extra,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
            )
        if not wait_up:
            return self
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(
                    f"wgactors exited with {self.proc.returncode}:\n{self.log()}", self.log_path
                )
            if UP_MARKER in self.log():
                return self
            time.sleep(POLL_S)
        raise LabTimeout(f"wgactors did not come up:\n{self.log()}", self.log_path)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def interface_exists(self) -> bool:
        return self.ns.ip("link", "show", "dev", self.iface, check=False).returncode == 0

    def terminate(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` and wait for the exit status; a daemon that hangs fails the caller."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(KILL_WAIT_S)
            raise AssertionError(
                f"wgactors did not exit within {STOP_TIMEOUT}s:\n{self.log()}"
            ) from None

    def __enter__(self) -> Wgactors:
        return self.start()

    @property
    def socket_path(self) -> Path:
        return WG_SOCKET_DIR / f"{self.iface}.sock"

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL if that hangs; remove the UAPI socket a killed daemon could not
        (unless something else serves it). The exit status; never raises."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(KILL_WAIT_S)
        self.ns.forget(self.proc)
        if self.proc.returncode is not None and self.proc.returncode < 0:
            remove_stale_socket(self.socket_path)
        return self.proc.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cleanup(self) -> None:
        """Stop, and remove the log directory if this object made it."""
        self.stop()
        if self._own_logdir:
            shutil.rmtree(self._logdir, ignore_errors=True)


def remove_stale_socket(path: Path) -> None:
    """Remove a UAPI socket that nobody serves any more."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # not there, or not a socket: leave it
    finally:
        probe.close()
