"""The hand-over channel: how a worker passes what it read to the worker that owns it.

With worker processes each peer belongs to one worker, but the kernel does not always deliver
a peer's traffic there: the TUN device spreads the host's flows over its queues by hash, and an
initiation names no index the steering program can read. The worker that read such a packet
or datagram hands it to its owner over a local channel, in batches.

The channel of a worker is one ``AF_UNIX`` ``SOCK_DGRAM`` socket pair, made by the parent
(:func:`open_channels`): the worker reads its *inbox* end, and every other worker holds the
*door* end and writes to it (a pair is connected both ways, so any holder of the door reaches
the inbox; no name in the file system, nobody else can write). One channel datagram carries a
whole batch, packed record after record, so a batch of 64 costs one ``send`` and one ``recv``
and one kernel buffer, whatever the packets; a record is a 6-byte header (kind, length of the
endpoint's host, port, length of the data), the host's text (inbound datagrams only) and the
data.

Bounds: a channel datagram holds at most :data:`HANDOVER_BATCH` records and
:data:`HANDOVER_BATCH_BYTES` bytes; the door's send buffer (:data:`HANDOVER_BUFFER`) is the
queue: what the owner has not read yet counts against it, and a batch that finds it full is
dropped and counted (``handover_full``), never waited for, so a slow owner cannot stall the
worker that hands over. Order is kept from one sender to one owner: all packets of one flow
come from one TUN queue, so a flow is never reordered by the hand-over.

What it costs (``scripts/handoverbench.py``, batches of 64 packets of 1280 bytes between two
processes): about 1 us of the sender's CPU and 2.5 us of the owner's per packet, the owner's
mostly copying each packet out of the batch and validating it again as a ``Packet``: as much
as encrypting it. The kernel's flow table keeps it rare (:mod:`actors.io.tun`).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from ..packet import Packet, PacketError
from ..wireguard.actions import Endpoint

__all__ = [
    "HANDOVER_BATCH",
    "HANDOVER_BATCH_BYTES",
    "HANDOVER_BUFFER",
    "Arrivals",
    "Channel",
    "HandOverReceiver",
    "HandOverSender",
    "open_channels",
]

HANDOVER_BATCH = 64  # records per channel datagram
# bytes per channel datagram: 64 packets of 1280 bytes and their headers fit
HANDOVER_BATCH_BYTES = 96 << 10
# bytes asked for each door's send buffer, the owner's queue (~20 full batches where the kernel
# allows; it caps this at net.core.wmem_max, and never below one batch: see open_channels)
HANDOVER_BUFFER = 2 << 20
HANDOVER_READS = 16  # channel datagrams one receive() takes at most

OUTBOUND_PACKET = 1  # a packet from the host, for the owner to encrypt
INBOUND_DATAGRAM = 2  # a datagram from a peer, with its source endpoint, for the owner to receive
_RECORD = struct.Struct("<BBHH")  # kind, host length, port, data length
_MAX_HOST = 255


class Channel(NamedTuple):
    """One worker's channel: it reads ``inbox``; the others write to ``door``."""

    inbox: socket.socket
    door: socket.socket


def open_channels(workers: int) -> list[Channel]:
    """A channel per worker, both ends non-blocking and close-on-exec (pass them on
    explicitly). OSError if the kernel will not give a door room for one whole batch."""
    channels: list[Channel] = []
    try:
        for _ in range(workers):
            inbox, door = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            channels.append(Channel(inbox, door))
            for end in (inbox, door):
                end.setblocking(False)
            with contextlib.suppress(OSError):  # best effort: capped at wmem_max
                door.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HANDOVER_BUFFER)
            # the kernel reports twice what it reserves for data; one batch must fit
            if door.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2 < HANDOVER_BATCH_BYTES:
                raise OSError(errno.ENOBUFS, "a hand-over send buffer below one batch")
    except BaseException:
        for channel in channels:
            channel.inbox.close()
            channel.door.close()
        raise
    return channels


class _Pending:
    """The records waiting for one owner: whole channel datagrams, and the one being filled."""

    __slots__ = ("full", "parts", "records", "size")

    def __init__(self) -> None:
        self.full: list[tuple[bytes, int]] = []  # (datagram, records)
        self.parts: list[bytes] = []
        self.records = 0
        self.size = 0

    def add(self, header: bytes, host: bytes, data: bytes) -> None:
        size = len(header) + len(host) + len(data)
        if self.records == HANDOVER_BATCH or self.size + size > HANDOVER_BATCH_BYTES:
            self.seal()
        self.parts += (header, host, data) if host else (header, data)
        self.records += 1
        self.size += size

    def seal(self) -> None:
        if self.records:
            self.full.append((b"".join(self.parts), self.records))
            self.parts, self.records, self.size = [], 0, 0


class HandOverSender:
    """What one thread of a worker hands over: records gathered per owner, sent by
    :meth:`flush` (once per batch read). Owned by one thread; ``drops`` is its own."""

    def __init__(self, doors: Sequence[socket.socket]) -> None:
        self.doors = list(doors)
        self._pending = [_Pending() for _ in self.doors]
        self.drops: Counter[str] = Counter()
        self.sent = 0  # records the kernel accepted, over this sender's life

    def packets(self, worker: int, packets: Iterable[Packet]) -> None:
        """Hand ``packets`` (from the host, in order) to ``worker`` for encryption."""
        pending = self._pending[worker]
        for packet in packets:
            data = packet.data
            pending.add(_RECORD.pack(OUTBOUND_PACKET, 0, 0, len(data)), b"", data)

    def datagram(self, worker: int, data: bytes, source: Endpoint) -> None:
        """Hand a datagram that arrived from ``source`` to ``worker``."""
        host = source[0].encode()
        if len(host) > _MAX_HOST or len(data) > 0xFFFF:
            self.drops["handover_unencodable"] += 1
            return
        header = _RECORD.pack(INBOUND_DATAGRAM, len(host), source[1], len(data))
        self._pending[worker].add(header, host, data)

    def flush(self) -> int:
        """Send everything gathered; how many records went. A batch that finds its owner's
        queue full is dropped whole and counted."""
        sent = 0
        for door, pending in zip(self.doors, self._pending, strict=True):
            if not pending.records and not pending.full:
                continue
            pending.seal()
            for datagram, records in pending.full:
                try:
                    door.send(datagram)
                    sent += records
                except BlockingIOError:
                    self.drops["handover_full"] += records
                except OSError as e:
                    name = errno.errorcode.get(e.errno or 0, "error").lower()
                    self.drops[f"handover_{name}"] += records
            pending.full.clear()
        self.sent += sent
        return sent


class Arrivals(NamedTuple):
    """What other workers handed to this one, in the order each sender sent it."""

    packets: list[Packet]
    datagrams: list[tuple[bytes, Endpoint]]


class HandOverReceiver:
    """Reads a worker's inbox; owned by the one thread that polls it."""

    def __init__(self, inbox: socket.socket) -> None:
        self.inbox = inbox
        self._buffer = bytearray(HANDOVER_BATCH_BYTES + 1)  # one more: a longer one shows
        self._view = memoryview(self._buffer)
        self.drops: Counter[str] = Counter()

    def fileno(self) -> int:
        return self.inbox.fileno()

    def receive(self, max_reads: int = HANDOVER_READS) -> Arrivals:
        """The records of up to ``max_reads`` channel datagrams that are there now."""
        arrivals = Arrivals([], [])
        view = self._view
        for _ in range(max_reads):
            try:
                size = self.inbox.recv_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                break
            if size > HANDOVER_BATCH_BYTES:
                self.drops["handover_malformed"] += 1
                continue
            self._parse(view[:size], arrivals)
        return arrivals

    def _parse(self, view: memoryview, arrivals: Arrivals) -> None:
        unpack, header, at, end = _RECORD.unpack_from, _RECORD.size, 0, len(view)
        packets, datagrams = arrivals
        while at < end:
            if at + header > end:
                self.drops["handover_malformed"] += 1
                return
            kind, host_len, port, length = unpack(view, at)
            at += header
            data_at = at + host_len
            if data_at + length > end:
                self.drops["handover_malformed"] += 1
                return
            data = bytes(view[data_at : data_at + length])
            if kind == OUTBOUND_PACKET:
                try:
                    packets.append(Packet(data))
                except PacketError:
                    self.drops["handover_malformed"] += 1
            elif kind == INBOUND_DATAGRAM:
                host = bytes(view[at:data_at]).decode(errors="replace")
                datagrams.append((data, (host, port)))
            else:
                self.drops["handover_malformed"] += 1
            at = data_at + length
