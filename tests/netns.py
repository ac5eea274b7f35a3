"""A small harness for tests that need real network namespaces.

Everything here shells out to iproute2 (`ip`), wireguard-tools (`wg`) and
wireguard-go, so the tests exercise the same tools a person would use. All
waits are bounded and every cleanup path swallows its own errors, so a failing
test never leaves namespaces, interfaces or processes behind.

Public API:

* ``require_root_netns()`` - skip (or, with ``CI=true``, fail) when namespaces
  cannot be used here.
* ``Netns`` - context manager owning one namespace and the processes started in it.
* ``veth_pair(ns_a, ns_b, addr_a4, addr_b4, ...)`` - join two namespaces.
* ``gen_keypair()`` / ``gen_psk()`` - WireGuard keys via ``wg``.
* ``WireguardGo`` - the reference userspace WireGuard, run inside a ``Netns``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

WG_SOCKET_DIR = Path("/var/run/wireguard")
TERM_GRACE_S = 3.0

_probe_result: str | None = None  # cached reason why `ip netns` does not work ("" = it works)
_live_namespaces: set[Netns] = set()


class CommandError(subprocess.CalledProcessError):
    """A command failed; the message carries its stderr and stdout."""

    def __str__(self) -> str:
        parts = [super().__str__()]
        if self.stderr:
            parts.append(f"stderr:\n{self.stderr.rstrip()}")
        if self.output:
            parts.append(f"stdout:\n{self.output.rstrip()}")
        return "\n".join(parts)


def _run(
    cmd: Sequence[Any],
    *,
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,
    env_extra: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [str(a) for a in cmd]
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
    if check and proc.returncode != 0:
        raise CommandError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


# --------------------------------------------------------------------------- availability


def _netns_unavailable_reason() -> str:
    """Why namespaces cannot be used here ("" when they can). Probed once per process."""
    global _probe_result
    if os.geteuid() != 0:
        return "needs root (network namespaces, TUN devices)"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if _probe_result is None:
        name = f"wga-p{secrets.token_hex(4)}"
        try:
            res = _run(["ip", "netns", "add", name], check=False, timeout=10)
            if res.returncode != 0:
                _probe_result = f"`ip netns add` does not work here: {res.stderr.strip()}"
            else:
                _probe_result = ""
        except (OSError, subprocess.SubprocessError) as exc:
            _probe_result = f"`ip netns add` does not work here: {exc}"
        finally:
            with contextlib.suppress(Exception):
                _run(["ip", "netns", "del", name], check=False, timeout=10)
    return _probe_result


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: refusing to skip)", pytrace=False)
    pytest.skip(reason)


def require_root_netns() -> None:
    """Skip the calling test unless root + `ip netns` + /dev/net/tun work.

    Under ``CI=true`` this fails instead: CI must not go green by skipping.
    """
    reason = _netns_unavailable_reason()
    if reason:
        _skip_or_fail(reason)


def require_tools(*names: str) -> None:
    """Skip (or fail under CI) unless every named executable is on PATH."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        _skip_or_fail(f"missing tools: {', '.join(missing)} (scripts/test installs them)")


# --------------------------------------------------------------------------- namespaces


def _stop_process(proc: subprocess.Popen[Any], grace: float = TERM_GRACE_S) -> None:
    """SIGTERM (the whole process group if it leads one), then SIGKILL after `grace`."""
    if proc.poll() is not None:
        return

    def _signal(sig: int) -> None:
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    _signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    _signal(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


class Netns:
    """One network namespace (``wga-`` + 8 hex chars) with ``lo`` up.

    Use as a context manager. On exit every process started through
    :meth:`popen` is stopped, anything else still running inside the namespace
    is killed, and the namespace is deleted. Cleanup never raises.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"wga-{secrets.token_hex(4)}"
        if len(self.name) > 15:
            raise ValueError(f"namespace name too long (max 15): {self.name!r}")
        self._procs: list[subprocess.Popen[Any]] = []
        self._created = False

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    # -- lifecycle

    def create(self) -> Netns:
        if self._created:
            return self
        _run(["ip", "netns", "add", self.name], timeout=10)
        self._created = True
        _live_namespaces.add(self)
        try:
            _run(["ip", "-n", self.name, "link", "set", "lo", "up"], timeout=10)
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> Netns:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop tracked processes, kill stragglers, delete the namespace. Never raises."""
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                _stop_process(proc)
        self._procs.clear()
        if not self._created:
            return
        with contextlib.suppress(Exception):
            self._kill_remaining()
        deadline = time.monotonic() + 5
        while True:
            try:
                res = _run(["ip", "netns", "del", self.name], check=False, timeout=10)
                if res.returncode == 0 or not self.exists():
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self._created = False
        _live_namespaces.discard(self)

    def _kill_remaining(self) -> None:
        for sig, settle in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 2.0)):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + settle
            while time.monotonic() < deadline and self.pids():
                time.sleep(0.05)

    def pids(self) -> list[int]:
        """PIDs of processes whose network namespace is this one."""
        res = _run(["ip", "netns", "pids", self.name], check=False, timeout=10)
        if res.returncode != 0:
            return []
        return [int(tok) for tok in res.stdout.split() if tok.isdigit() and int(tok) != os.getpid()]

    def exists(self) -> bool:
        res = _run(["ip", "netns", "list"], check=False, timeout=10)
        return any(line.split()[0] == self.name for line in res.stdout.splitlines() if line.strip())

    # -- running things inside

    def run(
        self,
        *args: Any,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
        env_extra: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ip netns exec NAME *args``; text mode, output captured.

        With ``check`` a non-zero exit raises :class:`CommandError` whose message
        includes stderr and stdout. ``env_extra`` is added to the environment.
        """
        return _run(
            ["ip", "netns", "exec", self.name, *args],
            check=check,
            timeout=timeout,
            input=input,
            env_extra=env_extra,
        )

    def popen(self, *args: Any, **kw: Any) -> subprocess.Popen[Any]:
        """Start ``ip netns exec NAME *args`` in the background; stopped on cleanup.

        Keyword arguments go to :class:`subprocess.Popen`. By default stdin is
        /dev/null and the process gets its own session (so its children are
        signalled too).
        """
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        argv = ["ip", "netns", "exec", self.name, *(str(a) for a in args)]
        proc = subprocess.Popen(argv, **kw)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = TERM_GRACE_S) -> None:
        """Stop one process started with :meth:`popen` (SIGTERM, then SIGKILL)."""
        _stop_process(proc, grace)
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def ip(self, *args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Shorthand for ``ip -n NAME *args``."""
        return _run(["ip", "-n", self.name, *args], check=check, timeout=10)


@atexit.register
def _cleanup_leftover_namespaces() -> None:
    for ns in list(_live_namespaces):
        ns.close()


def _add_addr(ns: Netns, dev: str, addr: str, prefix: int | None) -> None:
    cidr = addr if "/" in addr or prefix is None else f"{addr}/{prefix}"
    extra = ["nodad"] if ":" in addr else []
    ns.ip("addr", "add", cidr, "dev", dev, *extra)


def veth_pair(
    ns_a: Netns,
    ns_b: Netns,
    addr_a4: str,
    addr_b4: str,
    addr_a6: str | None = None,
    addr_b6: str | None = None,
    prefix4: int = 24,
    prefix6: int = 64,
) -> tuple[str, str]:
    """Join two namespaces with a veth pair, address both ends and bring them up.

    IPv6 addresses are added with ``nodad`` so they are usable at once.
    Returns the interface names ``(in_a, in_b)``; they vanish with the namespaces.
    """
    tag = secrets.token_hex(3)
    name_a, name_b = f"va-{tag}", f"vb-{tag}"
    end_a = ["ip", "link", "add", name_a, "netns", ns_a.name, "type", "veth"]
    end_b = ["peer", "name", name_b, "netns", ns_b.name]
    _run([*end_a, *end_b], timeout=10)
    ends = ((ns_a, name_a, addr_a4, addr_a6), (ns_b, name_b, addr_b4, addr_b6))
    # Up first, then addresses: IPv6 addresses added while the link is down only
    # start answering neighbour solicitations ~1 s after the link comes up.
    for ns, dev, _, _ in ends:
        ns.ip("link", "set", dev, "up")
    for ns, dev, a4, a6 in ends:
        _add_addr(ns, dev, a4, prefix4)
        if a6:
            _add_addr(ns, dev, a6, prefix6)
    deadline = time.monotonic() + 5
    for ns, dev, _, _ in ends:
        while "LOWER_UP" not in ns.ip("-o", "link", "show", "dev", dev).stdout:
            if time.monotonic() > deadline:
                raise TimeoutError(f"veth {dev} in {ns.name} has no carrier after 5 s")
            time.sleep(0.02)
    return name_a, name_b


# --------------------------------------------------------------------------- keys


def gen_keypair() -> tuple[str, str]:
    """A fresh WireGuard key pair ``(private_b64, public_b64)`` from ``wg``."""
    private = _run(["wg", "genkey"], timeout=10).stdout.strip()
    public = _run(["wg", "pubkey"], input=private + "\n", timeout=10).stdout.strip()
    return private, public


def gen_psk() -> str:
    """A fresh base64 preshared key from ``wg genpsk``."""
    return _run(["wg", "genpsk"], timeout=10).stdout.strip()


# --------------------------------------------------------------------------- wireguard-go


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
    """The reference wireguard-go running in a :class:`Netns`.

    ``wireguard-go -f IFACE`` runs in the foreground (``LOG_LEVEL=debug``, log in
    a temp dir); once its UAPI socket appears it is configured with ``wg set``,
    given ``addresses`` (CIDR strings), the MTU, and brought up.

    The UAPI socket lives in ``/var/run/wireguard/IFACE.sock``, which all
    namespaces share, so the default interface name is unique per instance
    (``wg`` + 6 hex chars); pass ``iface="wgref0"`` only when one instance runs.

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
        start_timeout: float = 5.0,
    ) -> None:
        self.ns = ns
        self.iface = iface or f"wg{secrets.token_hex(3)}"
        if len(self.iface) > 15:
            raise ValueError(f"interface name too long (max 15): {self.iface!r}")
        self.private_key = private_key
        self.public_key = _run(
            ["wg", "pubkey"], input=private_key + "\n", timeout=10
        ).stdout.strip()
        self._listen_port = listen_port
        self.addresses = list(addresses)
        self.initial_peers = [p if isinstance(p, WgPeer) else WgPeer(**p) for p in peers]
        self.mtu = mtu
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[Any] | None = None
        self._tmpdir: Path | None = None
        self._log_path: Path | None = None
        self._final_log: str | None = None

    def __repr__(self) -> str:
        return f"WireguardGo({self.iface!r} in {self.ns.name!r})"

    @property
    def socket_path(self) -> Path:
        return WG_SOCKET_DIR / f"{self.iface}.sock"

    # -- lifecycle

    def start(self) -> WireguardGo:
        if self.proc is not None:
            return self
        if self.socket_path.exists():
            raise RuntimeError(f"{self.socket_path} already exists: interface name in use?")
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f"wga-{self.iface}-"))
        self._log_path = self._tmpdir / "wireguard-go.log"
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1", LOG_LEVEL="debug")
        try:
            with open(self._log_path, "wb") as log:
                self.proc = self.ns.popen(
                    "wireguard-go", "-f", self.iface, stdout=log, stderr=subprocess.STDOUT, env=env
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
                raise RuntimeError(
                    f"wireguard-go exited with {self.proc.returncode} before creating "
                    f"{self.socket_path}; log:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"wireguard-go did not create {self.socket_path} within "
                    f"{self.start_timeout}s; log:\n{self.log_text()}"
                )
            time.sleep(0.02)

    def _configure(self) -> None:
        key_file = self._secret_file("private.key", self.private_key)
        args: list[Any] = ["private-key", key_file]
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
        path = self._tmpdir / f"{secrets.token_hex(4)}-{name}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(content + "\n")
        return path

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
                raise TimeoutError(
                    f"no handshake with {public_key} on {self.iface} within {timeout}s; "
                    f"dump:\n{self.show_dump()}\nlog tail:\n{self.log_text()[-4000:]}"
                )
            time.sleep(0.1)

    def log_text(self) -> str:
        """wireguard-go's debug log so far (kept after stop)."""
        if self._log_path is not None and self._log_path.exists():
            return self._log_path.read_text(errors="replace")
        return self._final_log or ""


_CLONE_NEWNET = 0x40000000


def socket_in(ns: Netns, family: int, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket that lives in ``ns``'s network stack, for use from this process.

    A socket belongs to the namespace it was created in, so the calling thread enters ``ns``
    (setns), creates the socket and returns to its own namespace before anything else runs.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    with (
        open("/proc/thread-self/ns/net", "rb") as home,
        open(f"/run/netns/{ns.name}", "rb") as there,
    ):
        if libc.setns(there.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the test namespace failed")
        try:
            return socket.socket(family, kind)
        finally:
            if libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the home namespace failed")
