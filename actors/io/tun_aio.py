"""Linux AIO on the TUN device: a batch of packets read or written with one ``io_submit``.

For a TUN device each control block is performed synchronously inside ``io_submit``, in order,
with its own result, so a batch costs one system call (and one GIL hand-off, see
:mod:`actors.io.batching`) however many packets it holds. AIO has no glibc wrapper, so it is
called by system call number from a per-architecture table; on an architecture missing from
it, or where the kernel refuses an AIO context, TUN I/O takes the per-packet path (logged once).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
import sysconfig
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from loguru import logger

from .. import settings
from .batching import MAX_BATCH, READ_SLOT

__all__ = [
    "AIO_SYSCALLS",
    "READ_AHEAD_MIN",
    "AioReader",
    "AioSyscalls",
    "AioWriter",
    "aio_syscalls",
    "kernel_abi",
]

READ_AHEAD_MIN = 4  # reads submitted at least, per io_submit (see AioReader)

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
            words[at + _IOCB_BUF] = _cast(data, _c_void_p).value or 0  # type: ignore[arg-type]  # bytes give their buffer
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
