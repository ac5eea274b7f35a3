"""The WireGuard UDP socket: one dual-stack socket, drained in batches.

A single AF_INET6 socket with IPV6_V6ONLY off serves IPv4 and IPv6 peers alike (falling back to
AF_INET where IPv6 is disabled). IPv4 peers then show up as ``::ffff:a.b.c.d``; endpoints are
normalised to plain IPv4 text on the way in and mapped back on the way out, so the core only ever
sees ``("10.0.0.1", 51820)``.

The socket is non-blocking. Reads drain until EAGAIN or a batch is full; writes that hit a full
send buffer wait a bounded time for room, then drop and count: UDP is lossy anyway, and a
sender that waited forever would stall the stage.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
from collections import Counter

from loguru import logger

from .batch import MmsgReceiver

__all__ = ["MAX_DATAGRAM", "SEND_WAIT", "UdpSocket"]

MAX_DATAGRAM = 1500  # a WireGuard datagram for a 1280-byte packet is 1312 bytes
SEND_WAIT = 0.05  # seconds a send waits for buffer room before dropping
SOCKET_BUFFER = 4 << 20  # ask the kernel for 4 MiB each way; it caps this at rmem/wmem_max
_MAPPED = "::ffff:"


def _bind(port: int, fwmark: int) -> tuple[socket.socket, bool]:
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
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


class UdpSocket:
    def __init__(self, port: int = 0, *, fwmark: int = 0) -> None:
        sock, self.dual_stack = _bind(port, fwmark)
        self.sock = sock
        self.fwmark = fwmark
        self.port: int = sock.getsockname()[1]
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self._out_poll = select.poll()
        self._out_poll.register(sock.fileno(), select.POLLOUT)

    def fileno(self) -> int:
        return self.sock.fileno()

    def rebind(self, port: int) -> None:
        """Move to another port (``wg set listen-port``) without changing the descriptor.

        A new socket is bound first (so a port in use fails cleanly, with the old one intact),
        then dup2() puts it on our descriptor number: every stage that holds this object, and
        every poll registration, carries on with the new socket and nothing is re-wired.
        """
        if port == self.port and port != 0:
            return
        new, dual_stack = _bind(port, self.fwmark)
        try:
            if dual_stack != self.dual_stack:
                raise OSError(errno.EAFNOSUPPORT, "address family changed")
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
        self, max_batch: int, drops: Counter[str], receiver: MmsgReceiver | None = None
    ) -> list[tuple[bytes, tuple[str, int]]]:
        """Up to ``max_batch`` datagrams that are ready now, with normalised sources.

        Errors are counted in ``drops``, which belongs to the caller: this object keeps no
        mutable state of its own beyond the socket, so reader and senders share nothing."""
        if receiver is not None:  # the calling stage's own: one recvmmsg for the batch
            return receiver.receive(max_batch, drops)
        out: list[tuple[bytes, tuple[str, int]]] = []
        recvfrom = self.sock.recvfrom
        for _ in range(max_batch):
            try:
                data, addr = recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # e.g. ICMP port unreachable surfacing as ECONNREFUSED
                drops[f"recv_{errno.errorcode.get(e.errno or 0, 'error').lower()}"] += 1
                continue
            host = addr[0]
            if host.startswith(_MAPPED):
                host = host[7:]
            out.append((data, (host, addr[1])))
        return out

    def kernel_host(self, host: str) -> str:
        """The host as this socket's family spells it (IPv4 is mapped on a dual-stack one)."""
        return _MAPPED + host if self.dual_stack and ":" not in host else host

    def send(self, data: bytes, endpoint: tuple[str, int]) -> str | None:
        """Send one datagram; None on success, else the reason it was dropped."""
        host, port = endpoint
        if self.dual_stack and ":" not in host:
            host = _MAPPED + host
        elif not self.dual_stack and ":" in host:
            return "no_ipv6"
        try:
            self.sock.sendto(data, (host, port))
            return None
        except (BlockingIOError, InterruptedError):
            if self._out_poll.poll(SEND_WAIT * 1000):
                try:
                    self.sock.sendto(data, (host, port))
                    return None
                except OSError:
                    pass
            return "send_buffer_full"
        except OSError as e:
            logger.debug("send to {} failed: {}", endpoint, e)
            return f"send_{errno.errorcode.get(e.errno or 0, 'error').lower()}"

    def close(self) -> None:
        self.sock.close()
