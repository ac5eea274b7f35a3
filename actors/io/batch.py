"""Batched system calls, so that an I/O stage gives up the GIL once per batch, not per packet.

Why this matters more than it seems: a thread that releases the GIL for a system call must win it
back afterwards, and while another thread runs Python code that can take up to the interpreter's
switch interval. Measured here, one 1280-byte TUN write costs 2.5 us alone but 480 us with a
busy Python thread beside it (the "convoy effect"); a stage that writes packet by packet is then
slower on its own thread than in a single loop. So the I/O stages batch their system calls:

- :class:`AioWriter` writes a batch of packets to one file descriptor with Linux AIO: one
  ``io_submit`` and one ``io_getevents``, however many packets. For a TUN device each write is
  performed synchronously inside ``io_submit``, in order, with its own result.
- :class:`MmsgSender` sends a batch of UDP datagrams with one ``sendmmsg``.

Both go through ctypes, which releases the GIL for the duration of the call, and both fall back
to plain per-packet calls where the kernel refuses (no AIO context available, for instance).
AIO has no glibc wrapper, so it is called by system call number from a per-architecture table;
on an architecture missing from it, TUN I/O takes the per-packet path (logged once).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import select
import socket
import sys
import sysconfig
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from loguru import logger

from .. import settings

__all__ = [
    "AIO_SYSCALLS",
    "MAX_BATCH",
    "SEND_WAIT",
    "SOCKADDR_SIZE",
    "AioReader",
    "AioSyscalls",
    "AioWriter",
    "MmsgReceiver",
    "MmsgSender",
    "aio_syscalls",
    "kernel_abi",
    "send_error",
]

MAX_BATCH = 64  # packets per system call; also the size of the preallocated control blocks
SEND_WAIT = 0.05  # seconds a full send buffer is waited for, once per batch

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_cast, _c_void_p = ctypes.cast, ctypes.c_void_p  # cast runs with the GIL held (PYFUNCTYPE)


@dataclass(frozen=True, slots=True)
class AioSyscalls:
    """The Linux AIO system call numbers of one ABI. glibc has no wrappers for them, so they
    are called by number, and the numbers differ per architecture: x86_64's 206-209 are
    sendto, recvfrom, setsockopt and getsockopt on aarch64."""

    io_setup: int
    io_destroy: int
    io_getevents: int
    io_submit: int


_GENERIC = AioSyscalls(0, 1, 4, 2)  # include/uapi/asm-generic/unistd.h, for newer ports
#: Per kernel ABI. Sources: arch/x86/entry/syscalls/syscall_{64,32}.tbl,
#: include/uapi/asm-generic/unistd.h (arm64, riscv, loongarch), arch/arm/tools/syscall.tbl,
#: arch/powerpc/kernel/syscalls/syscall.tbl. Only little-endian ABIs: the iocb layout
#: (aio_key before aio_rw_flags) is the little-endian one.
AIO_SYSCALLS: dict[str, AioSyscalls] = {
    "x86_64": AioSyscalls(206, 207, 208, 209),
    "i386": AioSyscalls(245, 246, 247, 248),
    "aarch64": _GENERIC,
    "riscv64": _GENERIC,
    "loongarch64": _GENERIC,
    "arm": AioSyscalls(243, 244, 245, 246),  # EABI: armv6/armv7, and 32-bit on armv8
    "ppc64le": AioSyscalls(227, 228, 229, 230),
}


def kernel_abi(machine: str | None = None, pointer_bits: int | None = None) -> str | None:
    """The key of :data:`AIO_SYSCALLS` for this process, or None if we do not know it. The
    pointer size matters: a 32-bit Python on a 64-bit kernel uses the 32-bit numbers."""
    machine = (platform.machine() if machine is None else machine).lower()
    bits = ctypes.sizeof(ctypes.c_void_p) * 8 if pointer_bits is None else pointer_bits
    if sys.byteorder != "little":
        return None
    if machine in ("x86_64", "amd64"):
        if bits == 32 and str(sysconfig.get_config_var("MULTIARCH") or "").endswith("x32"):
            return None  # the x32 ABI numbers its calls differently
        return "x86_64" if bits == 64 else "i386"
    if machine in ("i386", "i486", "i586", "i686", "x86"):
        return "i386"
    if machine in ("aarch64", "arm64"):
        return "aarch64" if bits == 64 else "arm"
    if machine.startswith("arm"):
        return "arm" if bits == 32 else None
    if machine in ("riscv64", "loongarch64", "ppc64le") and bits == 64:
        return machine
    return None


_fallback_lock = threading.Lock()
_fallback_logged = False


def _unbatched(reason: str) -> None:
    """Log, once per process, that TUN I/O runs without AIO: slower, but it works."""
    global _fallback_logged
    with _fallback_lock:
        if _fallback_logged:
            return
        _fallback_logged = True
    logger.warning("{}: TUN reads and writes are not batched (one system call per packet)", reason)


def aio_syscalls() -> AioSyscalls | None:
    """The numbers to use here, or None (logged once) to take the unbatched path."""
    if settings.is_set(settings.TEST_UNBATCHED):
        _unbatched(f"{settings.TEST_UNBATCHED.name} is set")
        return None
    abi = kernel_abi()
    if abi is None:
        _unbatched(f"no AIO system call numbers known for {platform.machine() or 'this machine'}")
        return None
    return AIO_SYSCALLS[abi]


_IOCB_CMD_PREAD = 0
_IOCB_CMD_PWRITE = 1


class _Iocb(ctypes.Structure):
    _fields_ = [
        ("aio_data", ctypes.c_uint64),
        ("aio_key", ctypes.c_uint32),
        ("aio_rw_flags", ctypes.c_int32),
        ("aio_lio_opcode", ctypes.c_uint16),
        ("aio_reqprio", ctypes.c_int16),
        ("aio_fildes", ctypes.c_uint32),
        ("aio_buf", ctypes.c_uint64),
        ("aio_nbytes", ctypes.c_uint64),
        ("aio_offset", ctypes.c_int64),
        ("aio_reserved2", ctypes.c_uint64),
        ("aio_flags", ctypes.c_uint32),
        ("aio_resfd", ctypes.c_uint32),
    ]


class _IoEvent(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_uint64),
        ("obj", ctypes.c_uint64),
        ("res", ctypes.c_int64),
        ("res2", ctypes.c_int64),
    ]


_IOCB_WORDS = ctypes.sizeof(_Iocb) // 8
_IOCB_BUF = _Iocb.aio_buf.offset // 8
_IOCB_NBYTES = _Iocb.aio_nbytes.offset // 8
_EVENT_WORDS = ctypes.sizeof(_IoEvent) // 8
_EVENT_DATA = _IoEvent.data.offset // 8
_EVENT_RES = _IoEvent.res.offset // 8


def _reason(code: int) -> str:
    return f"write_{errno.errorcode.get(code, 'error').lower()}"


class _AioContext:
    """An AIO context with ``max_batch`` reusable control blocks of one kind on one fd."""

    def __init__(self, fd: int, max_batch: int, opcode: int) -> None:
        self.fd = fd
        self.max_batch = max_batch
        self._ctx = ctypes.c_ulong(0)
        self._calls = aio_syscalls()
        self.available = False
        if self._calls is not None:
            if _syscall(self._calls.io_setup, max_batch, ctypes.byref(self._ctx)) == 0:
                self.available = True
            else:
                _unbatched(f"io_setup failed ({os.strerror(ctypes.get_errno())})")
        self._iocbs = (_Iocb * max_batch)()
        self._ptrs = (ctypes.POINTER(_Iocb) * max_batch)(
            *[ctypes.pointer(self._iocbs[i]) for i in range(max_batch)]
        )
        self._events = (_IoEvent * max_batch)()
        # Results and buffer fields as plain 64-bit words of the arrays' memory: a ctypes field
        # access builds a structure object each time, several times the cost per packet.
        self._event_words = memoryview(self._events).cast("B").cast("q")
        self._iocb_words = memoryview(self._iocbs).cast("B").cast("Q")
        for i, cb in enumerate(self._iocbs):
            cb.aio_lio_opcode = opcode
            cb.aio_fildes = fd
            cb.aio_data = i

    def _run(self, n: int) -> list[int] | None:
        """Submit the first ``n`` control blocks and wait for all that the kernel took. Returns
        each one's result (bytes or -errno), as many as were submitted; None if the kernel
        refuses AIO, which makes the context unavailable. Raises OSError if waiting fails."""
        calls = self._calls
        assert calls is not None  # only called while available
        submitted = _syscall(calls.io_submit, self._ctx, n, self._ptrs)
        if submitted < 0:
            _unbatched(f"io_submit failed ({os.strerror(ctypes.get_errno())})")
            self.close()
            return None
        results = [0] * submitted
        done = 0
        while done < submitted:
            got = _syscall(calls.io_getevents, self._ctx, submitted - done, submitted - done,
                           self._events, None)  # fmt: skip
            if got < 0:
                if ctypes.get_errno() == errno.EINTR:
                    continue
                raise OSError(ctypes.get_errno(), "io_getevents failed")
            words = self._event_words
            for k in range(0, got * _EVENT_WORDS, _EVENT_WORDS):
                results[words[k + _EVENT_DATA]] = words[k + _EVENT_RES]
            done += got
        return results

    def close(self) -> None:
        if self.available and self._calls is not None:
            _syscall(self._calls.io_destroy, self._ctx)
        self.available = False


class AioWriter(_AioContext):
    """Writes batches of packets to ``fd``; owned by one thread (its control blocks are reused)."""

    def __init__(self, fd: int, max_batch: int = MAX_BATCH) -> None:
        super().__init__(fd, max_batch, _IOCB_CMD_PWRITE)

    def write(self, packets: Sequence[bytes]) -> list[str | None]:
        """Write each packet; for each, None on success or the reason it was dropped."""
        results: list[str | None] = []
        for start in range(0, len(packets), self.max_batch):
            chunk = packets[start : start + self.max_batch]
            if self.available:
                results += self._submit(chunk)
            else:
                results += [_write_one(self.fd, p) for p in chunk]
        return results

    def _submit(self, chunk: Sequence[bytes]) -> list[str | None]:
        n = len(chunk)
        words = self._iocb_words
        at = 0
        for data in chunk:
            words[at + _IOCB_BUF] = _cast(data, _c_void_p).value or 0  # type: ignore[arg-type]
            words[at + _IOCB_NBYTES] = len(data)
            at += _IOCB_WORDS
        try:
            done = self._run(n)
        except OSError:
            return [_reason(errno.EIO)] * n
        if done is None:  # e.g. the kernel refuses AIO here: per-packet from now on
            return [_write_one(self.fd, p) for p in chunk]
        results: list[str | None] = [_reason(-res) if res < 0 else None for res in done]
        # not accepted by io_submit: write them one by one
        results += [_write_one(self.fd, p) for p in chunk[len(done) :]]
        return results


def _write_one(fd: int, data: bytes) -> str | None:
    try:
        os.write(fd, data)
        return None
    except BlockingIOError:
        return "write_full"
    except OSError as e:
        return _reason(e.errno or errno.EIO)


# --------------------------------------------------------------------------- sendmmsg


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
                iov.iov_base = _cast(data, _c_void_p).value  # type: ignore[arg-type]
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


# --------------------------------------------------------------------------- batched reads

READ_SLOT = 2048  # bytes per read buffer: above the MTU, so oversize packets are seen whole
READ_AHEAD_MIN = 4  # reads submitted at least, per io_submit (see AioReader)


class AioReader(_AioContext):
    """Reads up to a batch of packets from a non-blocking fd with ``io_submit``: each read
    returns one packet or EAGAIN. Owned by one thread: its buffers are reused.

    Every read submitted costs the kernel a control block even when it only finds EAGAIN, so
    submitting the whole batch for one packet (the idle case: a ping) wastes tens of
    microseconds. The reader submits about as many reads as the last call found, at least
    READ_AHEAD_MIN, and doubles while every one of them comes back with a packet: an idle
    tunnel pays for a few reads, and a loaded one reads its batch in one system call (a few,
    when the load has just risen).
    """

    def __init__(self, fd: int, max_batch: int = MAX_BATCH, slot: int = READ_SLOT) -> None:
        super().__init__(fd, max_batch, _IOCB_CMD_PREAD)
        self.slot = slot
        self._buffer = ctypes.create_string_buffer(max_batch * slot)
        self._view = memoryview(self._buffer).cast("B")
        base = ctypes.addressof(self._buffer)
        for i, cb in enumerate(self._iocbs):
            cb.aio_buf = base + i * slot
            cb.aio_nbytes = slot
        self._want = min(READ_AHEAD_MIN, max_batch)
        self._pending: OSError | None = None  # raised by the next call (see read)

    def read(self, count: int) -> list[bytes]:
        """Up to ``count`` packets that are ready now, in order (empty if none).

        A read error after some packets were read returns those packets first (the kernel has
        already handed them over) and raises the error on the next call."""
        if self._pending is not None:
            error, self._pending = self._pending, None
            raise error
        count = min(count, self.max_batch)
        if not self.available:
            return _read_some(self.fd, count, self.slot)
        out: list[bytes] = []
        want = self._want
        while len(out) < count:
            n = min(want, count - len(out))
            try:
                filled = self._submit(n, out)
            except OSError as e:
                if not out:
                    raise
                self._pending = e
                break
            if filled < 0:  # the kernel refused AIO: plain reads from now on
                return out + _read_some(self.fd, count - len(out), self.slot)
            if filled < n:  # an EAGAIN: nothing more is ready
                break
            want = min(self.max_batch, want * 2)
        self._want = max(min(READ_AHEAD_MIN, self.max_batch), len(out))
        return out

    def _submit(self, n: int, out: list[bytes]) -> int:
        """Submit ``n`` reads, append the packets to ``out``; how many came back with one
        (-1 if AIO is unavailable)."""
        sizes = self._run(n)
        if sizes is None:
            return -1
        view, slot = self._view, self.slot
        filled = 0
        for i, size in enumerate(sizes):
            if size > 0:
                out.append(bytes(view[i * slot : i * slot + size]))
                filled += 1
            elif size < 0 and -size not in (errno.EAGAIN, errno.EINTR):
                raise OSError(-size, os.strerror(-size))
        return filled


def _read_some(fd: int, count: int, slot: int) -> list[bytes]:
    out = []
    for _ in range(count):
        try:
            out.append(os.read(fd, slot))
        except (BlockingIOError, InterruptedError):
            break
    return out


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
        got = _recvmmsg(self.sock.fileno(), self._msgs, count, socket.MSG_DONTWAIT, None)
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
