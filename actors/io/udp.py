"""The WireGuard UDP socket: one dual-stack socket, drained in batches.

A single AF_INET6 socket with IPV6_V6ONLY off serves IPv4 and IPv6 peers alike (falling back to
AF_INET where IPv6 is disabled). IPv4 peers then show up as ``::ffff:a.b.c.d``; endpoints are
normalised to plain IPv4 text on the way in and mapped back on the way out, so the core only ever
sees ``("10.0.0.1", 51820)``.

The socket is non-blocking. Reads drain until EAGAIN or a batch is full; writes that hit a full
send buffer wait a bounded time for room, then drop and count: UDP is lossy anyway, and a
sender that waited forever would stall the stage. With the UDP offloads (actors.io.udp_gso)
a run of datagrams travels as one buffer each way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
from collections import Counter

from .mmsg import SEND_WAIT, MmsgReceiver, MmsgSender
from .offloads import OffloadPlan, report_refused
from .udp_gso import SOL_UDP, UDP_GRO, UDP_SEGMENT, GroReceiver, GsoSender

__all__ = ["SEND_WAIT", "UdpSocket", "check_port_free"]

SOCKET_BUFFER = 4 << 20  # ask the kernel for 4 MiB each way; it caps this at rmem/wmem_max
_MAPPED = "::ffff:"


def _bind(port: int, fwmark: int, reuseport: bool) -> tuple[socket.socket, bool]:
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("::", port))
        except OSError:
            sock.close()
            raise
        dual_stack = True
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("0.0.0.0", port))
        except OSError:
            sock.close()
            raise
        dual_stack = False
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):  # best effort: the kernel may cap or refuse it
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    if fwmark:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, fwmark)
    sock.setblocking(False)
    return sock, dual_stack


def check_port_free(port: int, fwmark: int = 0) -> None:
    """OSError (EADDRINUSE) if something holds ``port`` already: a reuseport member would
    otherwise join another program's group on it, where one bind should fail."""
    probe, _ = _bind(port, fwmark, reuseport=False)
    probe.close()


UDP_OFFLOADS = ("udp_gso", "udp_gro")


class UdpSocket:
    """The listening socket, or, with ``reuseport``, one member of a ``SO_REUSEPORT`` group
    on the port: the kernel then gives each member its share of the datagrams (by the group's
    steering program, :mod:`actors.io.steering`, or by a hash of the addresses). A member's
    position in the group is the order it joined (bound) in."""

    def __init__(
        self,
        port: int = 0,
        *,
        fwmark: int = 0,
        offloads: OffloadPlan | None = None,
        reuseport: bool = False,
    ) -> None:
        sock, self.dual_stack = _bind(port, fwmark, reuseport)
        self.sock = sock
        self.reuseport = reuseport
        self.fwmark = fwmark
        self._plan = offloads if offloads is not None else OffloadPlan(wanted=frozenset())
        # what became of each offload: "on", "off" (not asked for) or "refused" (status shows it)
        self.offloads: dict[str, str] = {n: "off" for n in UDP_OFFLOADS}
        self._set_offloads(sock, report=True)
        self.port: int = sock.getsockname()[1]
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)

    @classmethod
    def adopt(
        cls, fd: int, *, offloads: dict[str, str], fwmark: int = 0, reuseport: bool = True
    ) -> UdpSocket:
        """A socket another process bound and passed on (a worker process's member of the
        group): its options are set already; ``offloads`` says what the binder got."""
        self = cls.__new__(cls)
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        self.sock = sock
        self.dual_stack = sock.family == socket.AF_INET6
        self.reuseport = reuseport
        self.fwmark = fwmark
        self.offloads = dict(offloads)
        self._plan = OffloadPlan(wanted=frozenset(n for n, v in offloads.items() if v == "on"))
        self.port = sock.getsockname()[1]
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        return self

    def _set_offloads(self, sock: socket.socket, *, report: bool) -> None:
        """UDP_SEGMENT needs no switch, only a kernel that knows it (4.18+): probed here. GRO
        is a socket option, set again on every new socket (rebind)."""
        plan = self._plan
        for name, opt in (("udp_gso", UDP_SEGMENT), ("udp_gro", UDP_GRO)):
            if not plan.asks(name) or self.offloads[name] == "refused":
                continue
            try:
                if plan.refuses(name):
                    raise OSError(errno.EINVAL, "refused (test switch)")
                if name == "udp_gso":
                    sock.getsockopt(SOL_UDP, opt)
                else:
                    sock.setsockopt(SOL_UDP, opt, 1)
                self.offloads[name] = "on"
            except OSError as e:
                self.offloads[name] = "refused"
                if report:
                    report_refused("udp", name, e.strerror or str(e))

    def make_sender(self) -> MmsgSender:
        """A batched sender for this socket (one per sending thread: it owns its buffers)."""
        if self.offloads["udp_gso"] == "on":
            return GsoSender(self.sock)
        return MmsgSender(self.sock)

    def make_receiver(self) -> MmsgReceiver:
        """A batched receiver for this socket (one per receiving thread)."""
        if self.offloads["udp_gro"] == "on":
            return GroReceiver(self.sock)
        return MmsgReceiver(self.sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def rebind(self, port: int) -> None:
        """Move to another port (``wg set listen-port``) without changing the descriptor.

        A new socket is bound first (so a port in use fails cleanly, with the old one intact),
        then dup2() puts it on our descriptor number: every stage that holds this object, and
        every poll registration, carries on with the new socket and nothing is re-wired.
        A member of a reuseport group joins the group on the new port, at its end: the whole
        group moves, in order (:func:`actors.io.steering.rebind_group`).
        """
        if port == self.port and port != 0:
            return
        self.take(self.bind_another(port))

    def bind_another(self, port: int) -> socket.socket:
        """A new socket on ``port``, bound as this one was (OSError if it cannot be), for
        :meth:`take`: a group binds all its new members before any of them moves."""
        new, dual_stack = _bind(port, self.fwmark, self.reuseport)
        if dual_stack != self.dual_stack:
            new.close()
            raise OSError(errno.EAFNOSUPPORT, "address family changed")
        return new

    def take(self, new: socket.socket) -> None:
        """Put ``new`` on our descriptor number (and close ``new``'s own): a socket bound by
        :meth:`bind_another`, or one another process bound and passed here."""
        try:
            self._set_offloads(new, report=False)  # options belong to the socket, not the fd
            os.dup2(new.fileno(), self.sock.fileno())
            self.port = self.sock.getsockname()[1]
        finally:
            new.close()

    def set_mark(self, fwmark: int) -> None:
        """``wg set fwmark``: mark outgoing datagrams for policy routing (0 clears it)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, fwmark)
        self.fwmark = fwmark

    def wait_readable(self, timeout: float) -> bool:
        return bool(self._poll.poll(timeout * 1000))

    def read_batch(
        self, max_batch: int, drops: Counter[str], receiver: MmsgReceiver
    ) -> list[tuple[bytes, tuple[str, int]]]:
        """Datagrams of up to ``max_batch`` receives that are ready now (with UDP GRO one
        receive may hold a run of them), with normalised sources; ``receiver`` is the calling
        stage's own (:meth:`make_receiver`).

        Errors are counted in ``drops``, which belongs to the caller: this object keeps no
        mutable state of its own beyond the socket, so reader and senders share nothing."""
        return receiver.receive(max_batch, drops)

    def kernel_host(self, host: str) -> str:
        """The host as this socket's family spells it (IPv4 is mapped on a dual-stack one)."""
        return _MAPPED + host if self.dual_stack and ":" not in host else host

    def close(self) -> None:
        self.sock.close()
