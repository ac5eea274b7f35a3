"""Run the real `wgactors up` launcher in a test namespace."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netns import WG_SOCKET_DIR, Netns, WgPeer, WireguardGo, gen_keypair

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "scripts" / "wgactors"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def write_conf(
    directory: Path, iface: str, interface: dict[str, Any], peers: Sequence[dict[str, Any]]
) -> Path:
    lines = ["[Interface]"] + [f"{k} = {v}" for k, v in interface.items()]
    for peer in peers:
        lines += ["", "[Peer]"] + [f"{k} = {v}" for k, v in peer.items() if v is not None]
    path = directory / f"{iface}.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


class Wgactors:
    """`scripts/wgactors up CONF` running in ``ns``; a context manager."""

    def __init__(
        self, ns: Netns, conf: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        # test-only settings (fault plans, forced fallbacks) are read only with this set
        self.env = dict(os.environ, WGACTORS_TEST_HOOKS="1", **(env or {}))
        self.ns = ns
        self.conf = conf
        self.iface = conf.stem
        self.extra = extra
        self._logdir = Path(tempfile.mkdtemp(prefix="wga-log-"))
        self.log_path = self._logdir / "wgactors.log"
        self.proc: subprocess.Popen[Any] | None = None

    def start(self, *, wait_up: bool = True) -> Wgactors:
        with open(self.log_path, "wb") as log:
            self.proc = self.ns.popen(
                str(LAUNCHER),
                "up",
                str(self.conf),
                "-v",
                *self.extra,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        if not wait_up:
            return self
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wgactors exited with {self.proc.returncode}:\n{self.log()}")
            if "up: UDP port" in self.log():
                return self
            time.sleep(0.05)
        raise TimeoutError(f"wgactors did not come up:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def interface_exists(self) -> bool:
        return self.ns.ip("link", "show", "dev", self.iface, check=False).returncode == 0

    def terminate(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(
                f"wgactors did not exit within {STOP_TIMEOUT}s:\n{self.log()}"
            ) from None

    def __enter__(self) -> Wgactors:
        return self.start()

    @property
    def socket_path(self) -> Path:
        return WG_SOCKET_DIR / f"{self.iface}.sock"

    def __exit__(self, *exc: object) -> None:
        """Stop the daemon with a clean SIGTERM; if that hangs, SIGKILL it, and remove the
        UAPI socket a killed daemon could not (unless something else is serving it)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
        if self.proc.returncode is not None and self.proc.returncode < 0:
            remove_stale_socket(self.socket_path)


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


A4, B4 = "10.99.0.1", "10.99.0.2"  # our tunnel address, wireguard-go's


def wireguard_go_pair(
    netns_pair: Any,
    tmp_path: Path,
    iface: str,
    *,
    interface: dict[str, Any] | None = None,
    peer: dict[str, Any] | None = None,
) -> tuple[WireguardGo, Path]:
    """A started wireguard-go in namespace b (B4/24, expecting us at A4/32), and a wgactors
    config for namespace a that reaches it. ``interface``/``peer`` add or override keys."""
    ours, our_pub = gen_keypair()
    theirs, _ = gen_keypair()
    wggo = WireguardGo(
        netns_pair.b,
        theirs,
        listen_port=51820,
        addresses=[f"{B4}/24"],
        peers=[WgPeer(our_pub, [f"{A4}/32"])],
    ).start()
    conf = write_conf(
        tmp_path,
        iface,
        {"PrivateKey": ours, "ListenPort": 51821, "Address": f"{A4}/24", **(interface or {})},
        [
            {
                "PublicKey": wggo.public_key,
                "AllowedIPs": f"{B4}/32",
                "Endpoint": f"{netns_pair.addr_b4}:51820",
                **(peer or {}),
            }
        ],
    )
    return wggo, conf
