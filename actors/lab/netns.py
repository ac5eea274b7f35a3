"""Network namespaces and veth links: the lab's wiring.

A :class:`Netns` owns one namespace and every process started in it; closing it stops them,
kills stragglers and deletes the namespace, bounded in time and without raising, so a failed
test or an interrupted benchmark leaves nothing behind. Namespaces still open when the
interpreter exits are closed by an ``atexit`` hook.
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
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .command import TERM_GRACE_S, LabTimeout, run, stop_process

NAME_MAX = 15  # Linux interface and (by our convention) namespace names
CARRIER_TIMEOUT_S = 5.0  # seconds for a new veth pair to report carrier
DELETE_TIMEOUT_S = 5.0  # seconds to retry `ip netns del` while the kernel lets go
KILL_SETTLE_S = (1.0, 2.0)  # seconds to wait after SIGTERM, then after SIGKILL, of stragglers
POLL_S = 0.05

_probe_result: str | None = None  # why `ip netns` does not work here ("" = it works)
_live_namespaces: set[Netns] = set()


def unavailable_reason() -> str:
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
            res = run(["ip", "netns", "add", name], check=False, timeout=10)
            reason = res.stderr.strip()
            _probe_result = "" if res.returncode == 0 else f"`ip netns add` fails: {reason}"
        except (OSError, subprocess.SubprocessError) as exc:
            _probe_result = f"`ip netns add` does not work here: {exc}"
        finally:
            with contextlib.suppress(Exception):
                run(["ip", "netns", "del", name], check=False, timeout=10)
    return _probe_result


def missing_tools(*names: str) -> list[str]:
    """The named executables that are not on PATH."""
    return [n for n in names if shutil.which(n) is None]


class Netns:
    """One network namespace (``wga-`` + 8 hex chars unless named) with ``lo`` up.

    Use as a context manager, or :meth:`create` and :meth:`close`.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"wga-{secrets.token_hex(4)}"
        if len(self.name) > NAME_MAX:
            raise ValueError(f"namespace name too long (max {NAME_MAX}): {self.name!r}")
        self._procs: list[subprocess.Popen[Any]] = []
        self._created = False

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    # -- lifecycle

    def create(self) -> Netns:
        if self._created:
            return self
        run(["ip", "netns", "add", self.name], timeout=10)
        self._created = True
        _live_namespaces.add(self)
        try:
            run(["ip", "-n", self.name, "link", "set", "lo", "up"], timeout=10)
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
                stop_process(proc)
        self._procs.clear()
        if not self._created:
            return
        with contextlib.suppress(Exception):
            self._kill_remaining()
        deadline = time.monotonic() + DELETE_TIMEOUT_S
        while True:
            with contextlib.suppress(Exception):
                res = run(["ip", "netns", "del", self.name], check=False, timeout=10)
                if res.returncode == 0 or not self.exists():
                    break
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self._created = False
        _live_namespaces.discard(self)

    def _kill_remaining(self) -> None:
        for sig, settle in zip((signal.SIGTERM, signal.SIGKILL), KILL_SETTLE_S, strict=True):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + settle
            while time.monotonic() < deadline and self.pids():
                time.sleep(POLL_S)

    def pids(self) -> list[int]:
        """PIDs of processes whose network namespace is this one."""
        res = run(["ip", "netns", "pids", self.name], check=False, timeout=10)
        if res.returncode != 0:
            return []
        return [int(tok) for tok in res.stdout.split() if tok.isdigit() and int(tok) != os.getpid()]

    def exists(self) -> bool:
        return Path("/run/netns", self.name).exists()

    # -- running things inside

    def run(
        self,
        *args: Any,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
        env_extra: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ip netns exec NAME *args`` to completion (see :func:`actors.lab.command.run`)."""
        return run(
            ["ip", "netns", "exec", self.name, *args],
            check=check,
            timeout=timeout,
            input=input,
            env_extra=env_extra,
        )

    def popen(self, *args: Any, **kw: Any) -> subprocess.Popen[Any]:
        """Start ``ip netns exec NAME *args`` in the background; stopped on :meth:`close`.

        Keyword arguments go to :class:`subprocess.Popen`. By default stdin is /dev/null and
        the process leads its own session, so signals reach its children too.
        """
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        argv = ["ip", "netns", "exec", self.name, *(str(a) for a in args)]
        proc = subprocess.Popen(argv, **kw)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = TERM_GRACE_S) -> int | None:
        """Stop one process started with :meth:`popen`; its exit status."""
        status = stop_process(proc, grace)
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)
        return status

    def forget(self, proc: subprocess.Popen[Any]) -> None:
        """Stop tracking a process that its owner has stopped in its own way."""
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def ip(self, *args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Shorthand for ``ip -n NAME *args``."""
        return run(["ip", "-n", self.name, *args], check=check, timeout=10)

    def link_gone(self, dev: str) -> bool:
        return self.ip("link", "show", "dev", dev, check=False).returncode != 0

    def wait_link_gone(self, dev: str, timeout: float) -> None:
        """Wait (bounded) for ``dev`` to disappear, then delete it if it is still there."""
        deadline = time.monotonic() + timeout
        while not self.link_gone(dev) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if not self.link_gone(dev):
            self.ip("link", "del", "dev", dev, check=False)


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
    *,
    names: tuple[str, str] | None = None,
    mtu: int | None = None,
) -> tuple[str, str]:
    """Join two namespaces with a veth pair, address both ends and bring them up.

    IPv6 addresses get ``nodad`` so they are usable at once. ``names`` picks the interface
    names (default ``va-``/``vb-`` + 6 hex chars), ``mtu`` the link MTU (default the kernel's).
    Returns the names ``(in_a, in_b)``; the links vanish with the namespaces.
    """
    if names is None:
        tag = secrets.token_hex(3)
        names = (f"va-{tag}", f"vb-{tag}")
    name_a, name_b = names
    end_a = ["ip", "link", "add", name_a, "netns", ns_a.name, "type", "veth"]
    end_b = ["peer", "name", name_b, "netns", ns_b.name]
    run([*end_a, *end_b], timeout=10)
    ends = ((ns_a, name_a, addr_a4, addr_a6), (ns_b, name_b, addr_b4, addr_b6))
    # Up first, then addresses: IPv6 addresses added while the link is down only
    # start answering neighbour solicitations ~1 s after the link comes up.
    for ns, dev, _, _ in ends:
        if mtu is not None:
            ns.ip("link", "set", dev, "mtu", mtu)
        ns.ip("link", "set", dev, "up")
    for ns, dev, a4, a6 in ends:
        _add_addr(ns, dev, a4, prefix4)
        if a6:
            _add_addr(ns, dev, a6, prefix6)
    deadline = time.monotonic() + CARRIER_TIMEOUT_S
    for ns, dev, _, _ in ends:
        while "LOWER_UP" not in ns.ip("-o", "link", "show", "dev", dev).stdout:
            if time.monotonic() > deadline:
                raise LabTimeout(f"veth {dev} in {ns.name} has no carrier after 5 s")
            time.sleep(0.02)
    return name_a, name_b


_CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def entered(ns: Netns) -> Iterator[None]:
    """Run the calling thread inside ``ns``'s network stack for the block: the TUN devices,
    sockets and netlink handles it opens there (and the processes it starts) belong to ``ns``
    and stay there. Back home at the end, whatever happens in the block."""
    libc = ctypes.CDLL(None, use_errno=True)
    with (
        open("/proc/thread-self/ns/net", "rb") as home,
        open(f"/run/netns/{ns.name}", "rb") as there,
    ):
        if libc.setns(there.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the test namespace failed")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the home namespace failed")


def socket_in(ns: Netns, family: int, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket that lives in ``ns``'s network stack, for use from this process.

    A socket belongs to the namespace it was created in, so the calling thread enters ``ns``,
    creates the socket and returns to its own namespace before anything else runs.
    """
    with entered(ns):
        return socket.socket(family, kind)
