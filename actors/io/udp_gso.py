"""UDP offloads on the WireGuard socket: segmentation on send (UDP_SEGMENT), GRO on receive.

- :class:`GsoSender` joins each run of equal-size datagrams to one endpoint (the last may be
  shorter) into one buffer and sends it with a UDP_SEGMENT control message: the kernel cuts it
  into datagrams below the socket layer, so a batch of 64 transport packets to one peer costs
  the kernel one trip through the UDP and IP stack instead of 64. All messages still go out in
  one ``sendmmsg``.
- :class:`GroReceiver` turns on UDP_GRO: the kernel hands over runs of datagrams from one source
  as one buffer with the segment size in a control message, and the receiver cuts them apart.

A kernel or device that refuses segmentation answers the send with EIO (no checksum offload on
the way out) or EINVAL: the sender then logs it once, sends that run as plain datagrams and
stays plain from then on.
"""

from __future__ import annotations

import ctypes
import errno
import socket
from collections import Counter
from collections.abc import Sequence

from .batching import MAX_BATCH
from .mmsg import SOCKADDR_SIZE, MmsgReceiver, MmsgSender, send_error
from .offloads import report_refused

__all__ = ["GRO_SLOT", "MAX_GSO_BYTES", "MAX_GSO_SEGMENTS", "GroReceiver", "GsoSender"]

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
MAX_GSO_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
MAX_GSO_BYTES = 65000  # a UDP payload must stay below 65507 bytes (IPv4), headers aside
GRO_SLOT = 65535  # bytes per receive buffer: a whole GRO run
GRO_BATCH = 32  # buffers per recvmmsg (32 x 64 KB)
_CMSG_HDR = 16  # struct cmsghdr on 64-bit Linux: size_t len, int level, int type
_CMSG_SPACE = 24  # room for one cmsghdr with up to 8 bytes of data
_MSG_TRUNC = 0x20


def _cmsg(level: int, kind: int, data: bytes) -> bytes:
    return (
        (_CMSG_HDR + len(data)).to_bytes(8, "little")
        + level.to_bytes(4, "little")
        + kind.to_bytes(4, "little")
        + data.ljust(_CMSG_SPACE - _CMSG_HDR, b"\0")
    )


class GsoSender(MmsgSender):
    """:class:`MmsgSender` with UDP_SEGMENT; owned by one thread (its buffers are reused)."""

    def __init__(self, sock: socket.socket, max_batch: int = MAX_BATCH) -> None:
        super().__init__(sock, max_batch)
        self.gso = True
        self._controls = ctypes.create_string_buffer(_CMSG_SPACE * max_batch)
        self._controls_view = memoryview(self._controls).cast("B")
        self._control_sizes = [-1] * max_batch  # the segment size each slot's cmsg holds now
        self._controls_base = ctypes.addressof(self._controls)
        self.runs_sent = 0  # GSO sends (more than one datagram in one buffer)
        self.runs_datagrams = 0

    def send(self, datagrams: Sequence[tuple[bytes, bytes]], drops: Counter[str]) -> int:
        if not self.gso:
            return super().send(datagrams, drops)
        # runs: (buffer, sockaddr, datagrams in it, segment size)
        runs: list[tuple[bytes, bytes, int, int]] = []
        i, n = 0, len(datagrams)
        while i < n:
            data, addr = datagrams[i]
            size = len(data)
            j = i + 1
            total = size
            while (
                j < n
                and j - i < MAX_GSO_SEGMENTS
                and datagrams[j][1] == addr
                and len(datagrams[j][0]) <= size
                and total + len(datagrams[j][0]) <= MAX_GSO_BYTES
            ):
                total += len(datagrams[j][0])
                j += 1
                if len(datagrams[j - 1][0]) < size:
                    break  # a shorter one ends a run
            if j - i == 1:
                runs.append((data, addr, 1, 0))
            else:
                runs.append((b"".join(d for d, _ in datagrams[i:j]), addr, j - i, size))
            i = j
        return self._send_runs(runs, drops)

    def _send_runs(self, runs: list[tuple[bytes, bytes, int, int]], drops: Counter[str]) -> int:
        """sendmmsg over the runs; the same bounded loop as the plain sender's. Every round
        sends or drops at least one run, so it ends."""
        sent_total = 0
        i = 0
        waited = False
        msgs, iovs, names = self._msgs, self._iovs, self._names_view
        slot_addrs, controls = self._slot_addrs, self._controls_view
        sizes, base = self._control_sizes, self._controls_base
        while i < len(runs):
            chunk = runs[i : i + self.max_batch]
            for k, (data, addr, _count, size) in enumerate(chunk):
                hdr = msgs[k].msg_hdr
                if slot_addrs[k] is not addr:
                    off = k * SOCKADDR_SIZE
                    names[off : off + len(addr)] = addr
                    hdr.msg_namelen = len(addr)
                    slot_addrs[k] = addr
                iov = iovs[k]
                iov.iov_base = ctypes.cast(data, ctypes.c_void_p).value  # type: ignore[arg-type]  # bytes give their buffer
                iov.iov_len = len(data)
                if size:
                    if sizes[k] != size:
                        off = k * _CMSG_SPACE
                        controls[off : off + _CMSG_SPACE] = _cmsg(
                            SOL_UDP, UDP_SEGMENT, size.to_bytes(2, "little")
                        )
                        sizes[k] = size
                    hdr.msg_control = base + k * _CMSG_SPACE
                    hdr.msg_controllen = _CMSG_SPACE
                else:
                    hdr.msg_control = None
                    hdr.msg_controllen = 0
            sent, waited = self._send_prepared(len(chunk), waited)
            if sent > 0:
                for data, _addr, count, size in chunk[:sent]:
                    sent_total += count
                    self.bytes_sent += len(data)
                    if size:
                        self.runs_sent += 1
                        self.runs_datagrams += count
                i += sent
                continue
            code = -sent
            if code == errno.EAGAIN:
                drops["send_buffer_full"] += sum(run[2] for run in runs[i:])
                return sent_total
            data, addr, count, size = runs[i]
            if size and code in (errno.EIO, errno.EINVAL):
                # the way out cannot segment: plain datagrams from now on, this run included
                self._give_up(code)
                return sent_total + super().send(_plain(runs[i:]), drops)
            drops[send_error(code)] += count
            i += 1  # skip the run the kernel refused; the rest may still go
        return sent_total

    def _give_up(self, code: int) -> None:
        self.gso = False
        for k in range(self.max_batch):  # the plain sender sends no control messages
            self._msgs[k].msg_hdr.msg_control = None
            self._msgs[k].msg_hdr.msg_controllen = 0
        report_refused("udp", "udp_gso", f"sendmsg: {errno.errorcode.get(code, code)}")


def _plain(runs: Sequence[tuple[bytes, bytes, int, int]]) -> list[tuple[bytes, bytes]]:
    """The runs as single datagrams again."""
    out: list[tuple[bytes, bytes]] = []
    for data, addr, _count, size in runs:
        if size:
            out += [(data[o : o + size], addr) for o in range(0, len(data), size)]
        else:
            out.append((data, addr))
    return out


class GroReceiver(MmsgReceiver):
    """:class:`MmsgReceiver` on a socket with UDP_GRO on: buffers of whole runs, cut apart by
    the segment size the kernel reports. Owned by one thread."""

    def __init__(self, sock: socket.socket, max_batch: int = GRO_BATCH) -> None:
        super().__init__(sock, max_batch, GRO_SLOT)
        self._controls = ctypes.create_string_buffer(_CMSG_SPACE * max_batch)
        self._controls_view = memoryview(self._controls).cast("B")
        base = ctypes.addressof(self._controls)
        for i in range(max_batch):
            self._msgs[i].msg_hdr.msg_control = base + i * _CMSG_SPACE
        self.runs_received = 0  # buffers that held more than one datagram
        self.runs_datagrams = 0

    def receive(self, count: int, drops: Counter[str]) -> list[tuple[bytes, tuple[str, int]]]:
        count = min(count, self.max_batch)
        msgs = self._msgs
        for i in range(count):
            hdr = msgs[i].msg_hdr
            hdr.msg_namelen = SOCKADDR_SIZE
            hdr.msg_controllen = _CMSG_SPACE
        got = self._receive_prepared(count, drops)
        out: list[tuple[bytes, tuple[str, int]]] = []
        view, names, slot, sources = self._view, self._names_view, self.slot, self._sources
        controls = self._controls_view
        for i in range(got):
            hdr = msgs[i].msg_hdr
            size = msgs[i].msg_len
            if hdr.msg_flags & _MSG_TRUNC:
                drops["oversize_datagram"] += 1
                continue
            name = bytes(names[i * SOCKADDR_SIZE : i * SOCKADDR_SIZE + SOCKADDR_SIZE])
            source = sources.get(name) or self._new_source(name)
            start = i * slot
            seg = _gro_size(controls, i, hdr.msg_controllen)
            if seg <= 0 or seg >= size:
                out.append((bytes(view[start : start + size]), source))
                continue
            self.runs_received += 1
            for off in range(start, start + size, seg):
                out.append((bytes(view[off : min(off + seg, start + size)]), source))
                self.runs_datagrams += 1
        return out


def _gro_size(controls: memoryview, index: int, length: int) -> int:
    """The segment size in slot ``index``'s control messages (0 if none)."""
    off = index * _CMSG_SPACE
    if length < _CMSG_HDR + 2:
        return 0
    level = int.from_bytes(controls[off + 8 : off + 12], "little")
    kind = int.from_bytes(controls[off + 12 : off + 16], "little")
    if level != SOL_UDP or kind != UDP_GRO:
        return 0
    data_len = int.from_bytes(controls[off : off + 8], "little") - _CMSG_HDR
    return int.from_bytes(controls[off + _CMSG_HDR : off + _CMSG_HDR + min(data_len, 4)], "little")
