"""UDP datagrams in batches: ``sendmmsg`` sends a batch with one system call, ``recvmmsg``
receives one (one GIL hand-off per batch, see :mod:`actors.io.batching`).

The per-message results are read as words of the ctypes arrays' memory, not through ctypes
structures, and sockaddrs are cached per endpoint: a datagram adds no system call and no GIL
release of its own.
"""

from __future__ import annotations

import ctypes
import errno
import select
import socket
from collections import Counter
from collections.abc import Sequence

from .batching import MAX_BATCH, READ_SLOT

__all__ = [
    "SEND_WAIT",
    "SOCKADDR_SIZE",
    "Iovec",
    "MmsgReceiver",
    "MmsgSender",
    "Mmsghdr",
    "send_error",
]

SEND_WAIT = 0.05  # seconds a full send buffer is waited for, once per batch

_libc = ctypes.CDLL(None, use_errno=True)
_cast, _c_void_p = ctypes.cast, ctypes.c_void_p  # cast runs with the GIL held (PYFUNCTYPE)


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


Iovec, Mmsghdr = _Iovec, _Mmsghdr  # for the lab's load generator, which sends alike


_sendmmsg = _libc.sendmmsg
_sendmmsg.restype = ctypes.c_int
SOCKADDR_SIZE = 28  # sockaddr_in6; sockaddr_in (16) fits in it


def _sockaddr(family: int, host: str, port: int) -> bytes:
    """The kernel's sockaddr for (host, port), built once per endpoint and cached."""
    if family == socket.AF_INET6:
        scope = 0
        if "%" in host:
            host, _, zone = host.partition("%")
            scope = socket.if_nametoindex(zone) if not zone.isdigit() else int(zone)
        packed = socket.inet_pton(socket.AF_INET6, host)
        return (
            socket.AF_INET6.to_bytes(2, "little")
            + port.to_bytes(2, "big")
            + bytes(4)
            + packed
            + scope.to_bytes(4, "little")
        )
    packed = socket.inet_pton(socket.AF_INET, host)
    return socket.AF_INET.to_bytes(2, "little") + port.to_bytes(2, "big") + packed + bytes(8)


class MmsgSender:
    """Sends batches of datagrams on one socket with sendmmsg; owned by one thread."""

    MAX_ENDPOINTS = 4096  # cached sockaddrs; the cache is cleared when full

    def __init__(self, sock: socket.socket, max_batch: int = MAX_BATCH) -> None:
        self.sock = sock
        self.max_batch = max_batch
        self._msgs = (_Mmsghdr * max_batch)()
        self._iovs = (_Iovec * max_batch)()
        self._names = ctypes.create_string_buffer(SOCKADDR_SIZE * max_batch)
        base = ctypes.addressof(self._names)
        for i in range(max_batch):
            hdr = self._msgs[i].msg_hdr
            hdr.msg_iov = ctypes.pointer(self._iovs[i])
            hdr.msg_iovlen = 1
            hdr.msg_name = base + i * SOCKADDR_SIZE
        self._names_view = memoryview(self._names).cast("B")
        self._slot_addrs: list[bytes | None] = [None] * max_batch  # what each slot holds now
        self.bytes_sent = 0  # payload bytes the kernel accepted, over this sender's life
        self._cache: dict[tuple[str, int], bytes] = {}

    def sendable(self, host: str, port: int) -> bytes:
        key = (host, port)
        addr = self._cache.get(key)
        if addr is None:
            if len(self._cache) >= self.MAX_ENDPOINTS:
                self._cache.clear()
            addr = _sockaddr(self.sock.family, host, port)
            if len(addr) > SOCKADDR_SIZE:  # cannot happen for INET/INET6; a slot holds this
                raise ValueError(f"sockaddr of {len(addr)} bytes")
            self._cache[key] = addr
        return addr

    def send(self, datagrams: Sequence[tuple[bytes, bytes]], drops: Counter[str]) -> int:
        """Send (data, sockaddr) pairs; returns how many went out. A datagram the kernel
        refuses is dropped and counted in ``drops`` (the caller's); a full send buffer gets one
        bounded wait, then the rest of the batch is dropped. Every round of the loop sends or
        drops at least one datagram, so it ends."""
        sent_total = 0
        i = 0
        n_all = len(datagrams)
        waited = False
        while i < n_all:
            chunk = datagrams[i : i + self.max_batch]
            n = len(chunk)
            names, slot_addrs = self._names_view, self._slot_addrs
            msgs, iovs = self._msgs, self._iovs
            for k, (data, addr) in enumerate(chunk):
                # No ctypes call per datagram (ctypes.memmove would release and retake the GIL,
                # a thread switch each time another thread is waiting for it). Most batches go
                # to one peer: a slot that already holds this sockaddr is left alone.
                if slot_addrs[k] is not addr:
                    off = k * SOCKADDR_SIZE
                    names[off : off + len(addr)] = addr
                    msgs[k].msg_hdr.msg_namelen = len(addr)
                    slot_addrs[k] = addr
                iov = iovs[k]
                iov.iov_base = _cast(data, _c_void_p).value  # type: ignore[arg-type]  # bytes give their buffer
                iov.iov_len = len(data)
            sent, waited = self._send_prepared(n, waited)
            if sent > 0:
                sent_total += sent
                self.bytes_sent += sum(len(data) for data, _ in chunk[:sent])
                i += sent
                continue
            if sent == -errno.EAGAIN:
                drops["send_buffer_full"] += n_all - i
                return sent_total
            drops[send_error(-sent)] += 1
            i += 1  # skip the datagram the kernel refused; the rest may still go
        return sent_total

    def _send_prepared(self, count: int, waited: bool) -> tuple[int, bool]:
        """One sendmmsg of the first ``count`` prepared messages: (how many went out, or the
        negated errno that stopped it; whether the send buffer was waited for). EINTR is
        retried; a full send buffer is waited for (SEND_WAIT) only if ``waited`` is still
        false, once per batch, then reported as -EAGAIN."""
        while True:
            sent = _sendmmsg(self.sock.fileno(), self._msgs, count, socket.MSG_DONTWAIT)
            if sent > 0:
                return sent, waited
            code = ctypes.get_errno() if sent < 0 else errno.EAGAIN
            if code == errno.EINTR:
                continue
            if (
                code == errno.EAGAIN
                and not waited
                and select.select([], [self.sock], [], SEND_WAIT)[1]
            ):
                waited = True
                continue
            return -code, waited


def send_error(code: int) -> str:
    """The drop reason for a datagram the kernel refused with errno ``code``."""
    return f"send_{errno.errorcode.get(code, 'error').lower()}"


_recvmmsg = _libc.recvmmsg
_recvmmsg.restype = ctypes.c_int
_MMSGHDR_SIZE = ctypes.sizeof(_Mmsghdr)
_MSG_LEN_OFFSET = _Mmsghdr.msg_len.offset
_MSG_FLAGS_OFFSET = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_flags.offset
_MSG_NAMELEN_OFFSET = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_namelen.offset
_MSG_TRUNC = 0x20  # in msg_flags: the datagram was larger than its buffer
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


class MmsgReceiver:
    """Receives up to a batch of datagrams with one ``recvmmsg``. Sources come back as
    (host, port) with IPv4-mapped addresses shown as plain IPv4; they are cached (bounded), so
    the same peer costs one dict look-up per datagram. Owned by one thread."""

    MAX_SOURCES = 4096

    def __init__(self, sock: socket.socket, max_batch: int = MAX_BATCH, slot: int = READ_SLOT):
        self.sock = sock
        self.max_batch = max_batch
        self.slot = slot
        self._buffer = ctypes.create_string_buffer(max_batch * slot)
        self._view = memoryview(self._buffer).cast("B")
        self._names = ctypes.create_string_buffer(SOCKADDR_SIZE * max_batch)
        self._names_view = memoryview(self._names).cast("B")
        self._iovs = (_Iovec * max_batch)()
        self._msgs = (_Mmsghdr * max_batch)()
        base, names = ctypes.addressof(self._buffer), ctypes.addressof(self._names)
        for i in range(max_batch):
            self._iovs[i].iov_base = base + i * slot
            self._iovs[i].iov_len = slot
            hdr = self._msgs[i].msg_hdr
            hdr.msg_iov = ctypes.pointer(self._iovs[i])
            hdr.msg_iovlen = 1
            hdr.msg_name = names + i * SOCKADDR_SIZE
            hdr.msg_namelen = SOCKADDR_SIZE
        self._sources: dict[bytes, tuple[str, int]] = {}
        # The kernel's per-message results, read as plain integers from the array's memory: a
        # ctypes field access builds a structure object per message, several times the cost.
        self._words = memoryview(self._msgs).cast("B").cast("I")
        self._results = [
            (
                (i * _MMSGHDR_SIZE + _MSG_LEN_OFFSET) // 4,
                (i * _MMSGHDR_SIZE + _MSG_FLAGS_OFFSET) // 4,
                i * slot,
                i * SOCKADDR_SIZE,
            )
            for i in range(max_batch)
        ]
        self._namelen_at = [
            (i * _MMSGHDR_SIZE + _MSG_NAMELEN_OFFSET) // 4 for i in range(max_batch)
        ]

    def receive(self, count: int, drops: Counter[str]) -> list[tuple[bytes, tuple[str, int]]]:
        count = min(count, self.max_batch)
        got = self._receive_prepared(count, drops)
        out = []
        view, names, sources, words = self._view, self._names_view, self._sources, self._words
        # The kernel wrote each used slot's address length (the rest still hold the full size):
        # the next call must offer the whole buffer again.
        for at in self._namelen_at[:got]:
            words[at] = SOCKADDR_SIZE
        for length_at, flags_at, data_at, name_at in self._results[:got]:
            if words[flags_at] & _MSG_TRUNC:  # larger than any datagram of ours
                drops["oversize_datagram"] += 1
                continue
            name = bytes(names[name_at : name_at + SOCKADDR_SIZE])
            source = sources.get(name) or self._new_source(name)
            out.append((bytes(view[data_at : data_at + words[length_at]]), source))
        return out

    def _receive_prepared(self, count: int, drops: Counter[str]) -> int:
        """One recvmmsg into the first ``count`` prepared slots: how many arrived (0 when none
        did, or on an error, which is counted in ``drops`` unless it is EAGAIN or EINTR)."""
        got: int = _recvmmsg(self.sock.fileno(), self._msgs, count, socket.MSG_DONTWAIT, None)
        if got < 0:
            code = ctypes.get_errno()
            if code not in (errno.EAGAIN, errno.EINTR):
                drops[f"recv_{errno.errorcode.get(code, 'error').lower()}"] += 1
            return 0
        return got

    def _new_source(self, name: bytes) -> tuple[str, int]:
        """(host, port) of a sockaddr not in the cache yet, remembered (the cache is bounded:
        cleared when full)."""
        source = _source(name)
        if len(self._sources) >= self.MAX_SOURCES:
            self._sources.clear()
        self._sources[name] = source
        return source


def _source(name: bytes) -> tuple[str, int]:
    family = int.from_bytes(name[:2], "little")
    port = int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET6:
        packed = name[8:24]
        if packed[:12] == _MAPPED_PREFIX:
            return socket.inet_ntop(socket.AF_INET, packed[12:]), port
        return socket.inet_ntop(socket.AF_INET6, packed), port
    return socket.inet_ntop(socket.AF_INET, name[4:8]), port
