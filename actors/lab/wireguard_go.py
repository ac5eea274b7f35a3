"""The reference implementation, wireguard-go, run inside a lab namespace and set up by ``wg``."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .command import LabError, LabTimeout, pinned, write_secret
from .keys import public_key
from .netns import NAME_MAX, Netns

WG_SOCKET_DIR = Path("/var/run/wireguard")
START_TIMEOUT_S = 5.0  # seconds for wireguard-go to create its UAPI socket
HANDSHAKE_POLL_S = 0.1
DEFAULT_BINARY = "wireguard-go"  # the one on PATH (Debian's package)


def format_endpoint(endpoint: str | tuple[str, int]) -> str:
    """``("fd77::2", 51820)`` -> ``"[fd77::2]:51820"``; strings pass through."""
    if isinstance(endpoint, str):
        return endpoint
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class WgPeer:
    """A peer for :class:`WireguardGo` (also accepted as a plain dict of these fields)."""

    public_key: str
    allowed_ips: Sequence[str] = ()
    endpoint: str | tuple[str, int] | None = None
    persistent_keepalive: int | None = None
    preshared_key: str | None = None


@dataclass
class PeerDump:
    """One peer line of ``wg show IFACE dump``."""

    public_key: str
    preshared_key: str | None
    endpoint: str | None
    allowed_ips: list[str]
    latest_handshake: int
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None
    raw: list[str] = field(repr=False, default_factory=list)


def parse_dump(text: str) -> tuple[dict[str, Any], list[PeerDump]]:
    """Parse ``wg show IFACE dump`` into (interface fields, peers)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return {}, []
    head = lines[0].split("\t")
    iface = {
        "private_key": head[0],
        "public_key": head[1],
        "listen_port": int(head[2]) if head[2].isdigit() else 0,
        "fwmark": head[3] if len(head) > 3 else "off",
    }
    peers = []
    for ln in lines[1:]:
        f = ln.split("\t")
        peers.append(
            PeerDump(
                public_key=f[0],
                preshared_key=None if f[1] == "(none)" else f[1],
                endpoint=None if f[2] == "(none)" else f[2],
                allowed_ips=[] if f[3] == "(none)" else f[3].split(","),
                latest_handshake=int(f[4]),
                rx_bytes=int(f[5]),
                tx_bytes=int(f[6]),
                persistent_keepalive=None if f[7] == "off" else int(f[7]),
                raw=f,
            )
        )
    return iface, peers


class WireguardGo:
    """wireguard-go running in a :class:`Netns`.

    ``wireguard-go -f IFACE`` runs in the foreground (log in a temp dir, kept after stop);
    once its UAPI socket appears it is configured with ``wg set``, given ``addresses`` (CIDR
    strings), the MTU, and brought up. ``cpus`` pins it to a CPU list (``taskset -c``).

    The UAPI socket lives in ``/var/run/wireguard/IFACE.sock``, which all namespaces share, so
    the default interface name is unique per instance (``wg`` + 6 hex chars). ``binary`` is
    the program run (default the ``wireguard-go`` on PATH), so any build can be the reference.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        ns: Netns,
        private_key: str,
        *,
        listen_port: int | None = None,
        addresses: Iterable[str] = (),
        peers: Iterable[WgPeer | Mapping[str, Any]] = (),
        iface: str | None = None,
        mtu: int = 1280,
        start_timeout: float = START_TIMEOUT_S,
        log_level: str = "debug",
        cpus: str | None = None,
        binary: str = DEFAULT_BINARY,
    ) -> None:
        self.ns = ns
        self.iface = iface or f"wg{secrets.token_hex(3)}"
        if len(self.iface) > NAME_MAX:
            raise ValueError(f"interface name too long (max {NAME_MAX}): {self.iface!r}")
        self.private_key = private_key
        self.public_key = public_key(private_key)
        self._listen_port = listen_port
        self.addresses = list(addresses)
        self.initial_peers = [p if isinstance(p, WgPeer) else WgPeer(**p) for p in peers]
        self.mtu = mtu
        self.start_timeout = start_timeout
        self.log_level = log_level
        self.cpus = cpus
        self.binary = binary
        self.proc: subprocess.Popen[Any] | None = None
        self._tmpdir: Path | None = None
        self._log_path: Path | None = None
        self._final_log: str | None = None

    def __repr__(self) -> str:
        return f"WireguardGo({self.iface!r} in {self.ns.name!r})"

    @property
    def socket_path(self) -> Path:
        return WG_SOCKET_DIR / f"{self.iface}.sock"

    @property
    def log_path(self) -> Path | None:
        """The live log file (None once stopped: :meth:`log_text` still has the text)."""
        return self._log_path

    # -- lifecycle

    def start(self) -> WireguardGo:
        if self.proc is not None:
            return self
        if self.socket_path.exists():
            raise LabError(f"{self.socket_path} already exists: interface name in use?")
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f"wga-{self.iface}-"))
        self._log_path = self._tmpdir / "wireguard-go.log"
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1", LOG_LEVEL=self.log_level)
        try:
            with open(self._log_path, "wb") as log:
                self.proc = self.ns.popen(
                    *pinned(self.cpus),
                    self.binary,
                    "-f",
                    self.iface,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            self._wait_for_socket()
            self._configure()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_socket(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while not self.socket_path.exists():
            if self.proc.poll() is not None:
                raise LabError(
                    f"wireguard-go exited with {self.proc.returncode} before creating "
                    f"{self.socket_path}; log:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                raise LabTimeout(
                    f"wireguard-go did not create {self.socket_path} within "
                    f"{self.start_timeout}s; log:\n{self.log_text()}"
                )
            time.sleep(0.02)

    def _configure(self) -> None:
        args: list[Any] = ["private-key", self._secret_file("private.key", self.private_key)]
        if self._listen_port is not None:
            args += ["listen-port", self._listen_port]
        self.wg_set(*args)
        for peer in self.initial_peers:
            self.set_peer(
                peer.public_key,
                allowed_ips=peer.allowed_ips,
                endpoint=peer.endpoint,
                persistent_keepalive=peer.persistent_keepalive,
                preshared_key=peer.preshared_key,
            )
        for addr in self.addresses:
            extra = ["nodad"] if ":" in addr else []
            self.ns.ip("addr", "add", addr, "dev", self.iface, *extra)
        self.ns.ip("link", "set", "dev", self.iface, "mtu", self.mtu, "up")

    def __enter__(self) -> WireguardGo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop wireguard-go, delete the interface and socket if left. Never raises."""
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.ns.stop(self.proc)
        with contextlib.suppress(Exception):
            if self.ns.exists():
                self.ns.ip("link", "del", "dev", self.iface, check=False)
        with contextlib.suppress(Exception):
            if self.proc is not None:
                self.socket_path.unlink(missing_ok=True)
        with contextlib.suppress(Exception):
            if self._log_path is not None and self._log_path.exists():
                self._final_log = self._log_path.read_text(errors="replace")
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self._log_path = None
        self.proc = None

    close = stop

    # -- configuration

    def _secret_file(self, name: str, content: str) -> Path:
        assert self._tmpdir is not None, "not started"
        return write_secret(self._tmpdir / f"{secrets.token_hex(4)}-{name}", content)

    def wg_set(self, *args: Any) -> None:
        """``wg set IFACE *args`` inside the namespace."""
        self.ns.run("wg", "set", self.iface, *args, timeout=10)

    def set_peer(
        self,
        public_key: str,
        *,
        allowed_ips: Iterable[str] = (),
        endpoint: str | tuple[str, int] | None = None,
        persistent_keepalive: int | None = None,
        preshared_key: str | None = None,
    ) -> None:
        """Add or update a peer (``wg set IFACE peer ...``)."""
        args: list[Any] = ["peer", public_key]
        if preshared_key is not None:
            args += ["preshared-key", self._secret_file("psk", preshared_key)]
        ips = list(allowed_ips)
        if ips:
            args += ["allowed-ips", ",".join(ips)]
        if endpoint is not None:
            args += ["endpoint", format_endpoint(endpoint)]
        if persistent_keepalive is not None:
            args += ["persistent-keepalive", persistent_keepalive or "off"]
        self.wg_set(*args)

    def remove_peer(self, public_key: str) -> None:
        self.wg_set("peer", public_key, "remove")

    # -- inspection

    def show_dump(self) -> str:
        """``wg show IFACE dump`` (tab separated; first line is the interface)."""
        return self.ns.run("wg", "show", self.iface, "dump", timeout=10).stdout

    def dump(self) -> tuple[dict[str, Any], list[PeerDump]]:
        return parse_dump(self.show_dump())

    def peer(self, public_key: str) -> PeerDump | None:
        return next((p for p in self.dump()[1] if p.public_key == public_key), None)

    def transfer(self) -> tuple[int, int] | None:
        """(rx, tx) bytes of the first peer, as wireguard-go counted them; None if unreadable."""
        with contextlib.suppress(Exception):
            peers = self.dump()[1]
            if peers:
                return peers[0].rx_bytes, peers[0].tx_bytes
        return None

    @property
    def listen_port(self) -> int:
        """The configured port, or the one wireguard-go picked."""
        if self._listen_port is None:
            return int(self.dump()[0]["listen_port"])
        return self._listen_port

    def wait_for_handshake(self, public_key: str, timeout: float = 10.0) -> PeerDump:
        """Wait (bounded) until the peer has a handshake; returns its dump line."""
        deadline = time.monotonic() + timeout
        while True:
            peer = self.peer(public_key)
            if peer is not None and peer.latest_handshake > 0:
                return peer
            if time.monotonic() > deadline:
                raise LabTimeout(
                    f"no handshake with {public_key} on {self.iface} within {timeout}s; "
                    f"dump:\n{self.show_dump()}\nlog tail:\n{self.log_text()[-4000:]}"
                )
            time.sleep(HANDSHAKE_POLL_S)

    def log_text(self) -> str:
        """wireguard-go's log so far (kept after stop)."""
        if self._log_path is not None and self._log_path.exists():
            return self._log_path.read_text(errors="replace")
        return self._final_log or ""
