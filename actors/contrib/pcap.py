"""A stage that records the packets passing through it in a pcap file.

Why classic pcap and not pcapng: it is the simplest format every tool reads (Wireshark, tshark,
tcpdump, scapy), a fixed 24-byte file header and a 16-byte header per record, so writing it
needs nothing beyond :mod:`struct`. The packets here are bare IP packets (the TUN side of the
tunnel has no link layer), so the link type is ``LINKTYPE_RAW`` and readers pick IPv4 or IPv6
from the version nibble.

Put it where you want to look: on the inbound path it sees decrypted traffic from peers, on the
outbound path what the host sends into the tunnel::

    [[inbound]]
    use = "actors.contrib.pcap:PcapWriter"
    options = { path = "/var/tmp/wg0-in.pcap" }   # a relative path starts at the pipeline file

Durability: the records of a batch are written together and the file is flushed once per batch,
so a crash loses at most the batch being written, while a busy path does not pay a flush per
packet.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import IO, Any

from ..packet import Packet
from ..stage import Stage

__all__ = [
    "DEFAULT_SNAPLEN",
    "LINKTYPE_RAW",
    "MAX_SNAPLEN",
    "PCAP_MAGIC",
    "PcapWriter",
]

PCAP_MAGIC = 0xA1B2C3D4
"""Classic pcap, microsecond timestamps."""
PCAP_VERSION = (2, 4)
LINKTYPE_RAW = 101
"""Raw IP: each record starts with the IPv4 or IPv6 header."""
DEFAULT_SNAPLEN = 65535
"""Bytes kept of each packet by default: all of it (packets are at most 1280 bytes anyway)."""
MIN_SNAPLEN = 1
MAX_SNAPLEN = 262144
"""The largest snapshot length Wireshark accepts for a capture file."""
MAX_PATH_LENGTH = 4096
"""PATH_MAX on Linux: longer paths cannot be opened."""

# Little-endian throughout; readers recognise the byte order by the magic number.
_FILE_HEADER = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, link
_RECORD_HEADER = struct.Struct("<IIII")  # seconds, microseconds, captured length, original length


def file_header(snaplen: int = DEFAULT_SNAPLEN) -> bytes:
    """The 24-byte global header of a classic pcap file of raw IP packets."""
    return _FILE_HEADER.pack(PCAP_MAGIC, *PCAP_VERSION, 0, 0, snaplen, LINKTYPE_RAW)


class PcapWriter(Stage):
    """Writes one pcap record per packet and passes every packet on unchanged.

    Options: ``path`` (required), the file to write (a relative path starts at the pipeline
    file); ``snaplen`` (default ``DEFAULT_SNAPLEN``), the most bytes kept of each packet. The
    file is created, or truncated, when the stage first starts; an incarnation restarted by the
    supervisor appends instead, so that a restart keeps what was captured before it.
    """

    def __init__(self, path: Path | str, snaplen: int = DEFAULT_SNAPLEN) -> None:
        super().__init__()
        if not isinstance(path, str | PurePath):
            raise TypeError(f"path must be a string, not {type(path).__name__}")
        if not str(path).strip():
            raise ValueError("path must not be empty")
        if "\0" in str(path):
            raise ValueError("path must not contain a NUL character")
        if len(str(path)) > MAX_PATH_LENGTH:
            raise ValueError(f"path is longer than {MAX_PATH_LENGTH} characters")
        if not isinstance(snaplen, int) or isinstance(snaplen, bool):
            raise TypeError(f"snaplen must be an integer, not {type(snaplen).__name__}")
        if not MIN_SNAPLEN <= snaplen <= MAX_SNAPLEN:
            raise ValueError(f"snaplen must be {MIN_SNAPLEN}..{MAX_SNAPLEN}, not {snaplen}")
        self.path = Path(path)
        self.snaplen = snaplen
        self.written = 0
        self._file: IO[bytes] | None = None

    def on_start(self) -> None:
        worker, workers = self.context.worker
        if workers > 1:  # every worker process has an instance: each writes a file of its own
            self.path = self.path.with_name(f"{self.path.stem}.w{worker}{self.path.suffix}")
        restarted = self.context.incarnation > 1
        # Errors (missing directory, permissions) propagate: the supervisor reports them.
        self._file = open(self.path, "ab" if restarted else "wb")  # noqa: SIM115 (closed in on_stop)
        if self._file.tell() == 0:
            self._file.write(file_header(self.snaplen))
            self._file.flush()

    def on_stop(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, packets: Iterable[Packet]) -> None:
        """Append the records of ``packets``, all stamped now, in one write, and flush."""
        f = self._file
        if f is None:
            raise RuntimeError(f"{type(self).__name__} is not started: its file is not open")
        seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
        pack = _RECORD_HEADER.pack
        snaplen = self.snaplen
        chunks: list[bytes] = []
        count = 0
        for packet in packets:
            data = packet.data
            kept = data[:snaplen]
            chunks.append(pack(seconds, micros, len(kept), len(data)))
            chunks.append(kept)
            count += 1
        f.write(b"".join(chunks))
        f.flush()
        self.written += count

    def process(self, packet: Packet) -> Packet:
        self._write((packet,))
        return packet

    def process_batch(self, batch: tuple[Packet, ...]) -> list[Packet]:
        self._write(batch)
        return list(batch)

    def stats_extra(self) -> dict[str, Any]:
        return {"pcap_packets": self.written, "pcap_path": str(self.path)}
