"""TUN offloads: the virtio-net header, splitting what the kernel hands us, coalescing what we
hand back.

With IFF_VNET_HDR every read and write on the TUN device starts with a 10-byte virtio-net header
(``struct virtio_net_hdr`` in linux/virtio_net.h, host byte order; little-endian here). With
TUNSETOFFLOAD the kernel may then give us:

- a TCP segment of up to 64 KB (``GSO_TCPV4/6``) that its own stack did not cut to the MTU, so a
  bulk sender costs the kernel one trip down the stack per 64 KB instead of per 1280 bytes;
- a UDP super-datagram (``GSO_UDP_L4``, with USO) from a socket that used UDP_SEGMENT;
- a packet whose transport checksum is left to the device (``NEEDS_CSUM``: the field holds the
  pseudo-header sum, and the sum from ``csum_start`` on is ours to complete).

:func:`split` turns each of those into ordinary packets with correct checksums: TCP segments
are cut to at most 1280 bytes, so the stages after the reader, custom ones included, see
nothing new. UDP datagrams keep their size, which the application chose; one above 1280 bytes
(an interface MTU raised to wg-quick's 1420) is fragmented or answered by the reader like any
other oversize packet (:mod:`actors.io.tun`).

The other way, :func:`coalesce` joins consecutive in-order segments of one TCP flow into one
buffer with a GSO header (what the kernel's GRO does on a NIC). The receiving TCP stack then
handles one buffer per run instead of one per packet, and acknowledges once per run, which means
fewer ACKs for this process to carry back. The rules follow the kernel's GRO self-tests, as
wireguard-go does: same addresses, ports, ACK number, options and IP fields; contiguous sequence
numbers; all segments the size of the first except a shorter last one; PSH only on the last; and
only segments whose checksum verifies (the merged one gets a fresh checksum from the kernel, so
a bad one must not be hidden in it).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..checksum import finish, fold, ones_sum, pseudo_header_sum, valid
from ..packet import MAX_PACKET_SIZE

__all__ = [
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "GSO_UDP_L4",
    "MAX_SEGMENTS",
    "NEEDS_CSUM",
    "PLAIN_HEADER",
    "VNET_HDR_LEN",
    "GsoError",
    "coalesce",
    "split",
]

VNET_HDR_LEN = 10
NEEDS_CSUM = 1  # VIRTIO_NET_HDR_F_NEEDS_CSUM
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 3, 4, 5
GSO_ECN = 0x80
MAX_SUPER_PACKET = 65535  # an IPv4 total length cannot say more; we keep IPv6 to it as well
MAX_SEGMENTS = 64  # segments joined into one buffer at most (the kernel's UDP limit; TCP alike)
PLAIN_HEADER = bytes(VNET_HDR_LEN)  # a packet as it is: no GSO, checksum already complete

_HDR = struct.Struct("<BBHHHH")
_TCP, _UDP = 6, 17
_FIN, _PSH, _ACK, _CWR = 0x01, 0x08, 0x10, 0x80
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class GsoError(ValueError):
    """A virtio-net header or super-packet that does not make sense (counted as a drop)."""


# --------------------------------------------------------------------------- reading


def split(frame: bytes, max_size: int = MAX_PACKET_SIZE) -> list[bytes]:
    """The IP packets in one frame read from a vnet-hdr TUN device, checksums complete.

    A GSO frame is cut into segments of ``gso_size`` bytes of payload. TCP ones are cut
    smaller if that would make a packet longer than ``max_size``: TCP does not mind smaller
    segments, and this way a TUN device whose MTU was raised still yields packets that fit a
    message. UDP ones keep the datagram size the application chose, however large."""
    if len(frame) < VNET_HDR_LEN:
        raise GsoError("frame shorter than its virtio-net header")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = _HDR.unpack_from(frame)
    gso_type &= ~GSO_ECN
    pkt = frame[VNET_HDR_LEN:]
    if gso_type == GSO_NONE:
        if flags & NEEDS_CSUM:
            return [_complete(pkt, csum_start, csum_offset)]
        return [pkt]
    if gso_type in (GSO_TCPV4, GSO_TCPV6):
        return _split_tcp(pkt, csum_start, gso_size, max_size)
    if gso_type == GSO_UDP_L4:
        return _split_udp(pkt, csum_start, gso_size)
    raise GsoError(f"unsupported GSO type {gso_type}")


def _complete(pkt: bytes, start: int, offset: int) -> bytes:
    """Finish a partial checksum: the field holds the pseudo-header sum; add the rest."""
    at = start + offset
    if at + 2 > len(pkt) or start < 20:
        raise GsoError("checksum offsets outside the packet")
    total = ones_sum(memoryview(pkt)[start:])  # includes the pseudo sum already in the field
    return pkt[:at] + _U16.pack(finish(total)) + pkt[at + 2 :]


def _ip_parts(pkt: bytes, l4: int, proto: int) -> tuple[bool, bytes, bytes]:
    """Check the IP header in front of a GSO payload; (is_v6, source, destination)."""
    if len(pkt) < l4 + 8:
        raise GsoError("super-packet shorter than its headers")
    version = pkt[0] >> 4
    if version == 4:
        if l4 != (pkt[0] & 0x0F) * 4 or l4 < 20 or pkt[9] != proto:
            raise GsoError("IPv4 header does not match the GSO header")
        return False, pkt[12:16], pkt[16:20]
    if version == 6:
        if l4 != 40 or pkt[6] != proto:  # extension headers: the kernel never offloads them here
            raise GsoError("IPv6 header does not match the GSO header")
        return True, pkt[8:24], pkt[24:40]
    raise GsoError(f"IP version {version} in a GSO frame")


def _seg_size(gso_size: int, hdr_len: int, max_size: int) -> int:
    size = min(gso_size, max_size - hdr_len)
    if size < 1:
        raise GsoError(f"GSO segment size {gso_size} leaves no payload")
    return size


def _ip_header(ip: bytes, v6: bool, total_len: int, index: int, l4: int) -> bytes:
    """The IP header of segment ``index``: its length; for IPv4 the next ID and the checksum."""
    if v6:
        return ip[:4] + _U16.pack(total_len - 40) + ip[6:]
    ident = (_U16.unpack_from(ip, 4)[0] + index) & 0xFFFF
    head = ip[:2] + _U16.pack(total_len) + _U16.pack(ident) + ip[6:10]
    rest = ip[12:l4]
    csum = finish(ones_sum(head + b"\0\0" + rest))
    return head + _U16.pack(csum) + rest


def _split_tcp(pkt: bytes, l4: int, gso_size: int, max_size: int) -> list[bytes]:
    v6, src, dst = _ip_parts(pkt, l4, _TCP)
    if len(pkt) < l4 + 20:
        raise GsoError("super-packet shorter than its TCP header")
    hdr_len = l4 + (pkt[l4 + 12] >> 4) * 4
    if hdr_len < l4 + 20 or hdr_len > len(pkt):
        raise GsoError("bad TCP header length")
    size = _seg_size(gso_size, hdr_len, max_size)
    ip, tcp = pkt[:l4], pkt[l4:hdr_len]
    seq0 = _U32.unpack_from(tcp, 4)[0]
    flags = tcp[13]
    ports, ack_doff, window, rest = tcp[:4], tcp[8:13], tcp[14:16], tcp[18:]
    # Everything a segment's checksum shares, summed once: the pseudo header but its length,
    # the TCP header but sequence number and flags. Per segment: those, the length, the data.
    tcp_base = (
        pseudo_header_sum(src, dst, _TCP, hdr_len - l4)
        + ones_sum(ports + tcp[8:12] + window + rest)
        + (tcp[12] << 8)
    )
    if v6:
        ip_head, ip_tail, ip_base, ident0 = ip[:4], ip[6:], 0, 0
    else:
        # IPv4: the header sum without length, ID and checksum; those change per segment
        ip_head, ip_tail = ip[:2], ip[6:10]
        ip_rest = ip[12:]
        ident0 = _U16.unpack_from(ip, 4)[0]
        ip_base = ones_sum(ip_head + b"\0\0\0\0" + ip_tail + b"\0\0" + ip_rest)
    payload = memoryview(pkt)[hdr_len:]
    n = len(payload)
    out: list[bytes] = []
    pack16, pack32, from_bytes = _U16.pack, _U32.pack, int.from_bytes
    for index, off in enumerate(range(0, n, size)):
        chunk = payload[off : off + size]
        clen = len(chunk)
        seg_flags = flags
        if off + size < n:
            seg_flags &= ~(_FIN | _PSH)  # they belong to the last segment
        if index:
            seg_flags &= ~_CWR  # congestion window reduced: said once, on the first segment
        seq = (seq0 + off) & 0xFFFFFFFF
        data_sum = from_bytes(chunk, "big")
        if clen & 1:
            data_sum <<= 8
        csum = finish(tcp_base + clen + seq + seg_flags + data_sum)
        tcp_head = ports + pack32(seq) + ack_doff + bytes((seg_flags,)) + window + pack16(csum)
        total_len = hdr_len + clen
        if v6:
            ip_hdr = ip_head + pack16(total_len - 40) + ip_tail
        else:
            ident = (ident0 + index) & 0xFFFF
            ip_csum = finish(ip_base + total_len + ident)
            ip_hdr = (
                ip_head + pack16(total_len) + pack16(ident) + ip_tail + pack16(ip_csum) + ip_rest
            )
        out.append(b"".join((ip_hdr, tcp_head, rest, chunk)))
    return out


def _split_udp(pkt: bytes, l4: int, gso_size: int) -> list[bytes]:
    v6, src, dst = _ip_parts(pkt, l4, _UDP)
    hdr_len = l4 + 8
    # UDP datagram boundaries are the application's: they are kept, never cut smaller, and
    # one above MAX_PACKET_SIZE is left whole for the reader's oversize path
    if hdr_len + gso_size > MAX_SUPER_PACKET or gso_size < 1:
        raise GsoError(f"UDP GSO segment of {gso_size} bytes does not fit a packet")
    ip, ports = pkt[:l4], pkt[l4 : l4 + 4]
    addr_sum = pseudo_header_sum(src, dst, _UDP, 0) + ones_sum(ports)
    payload = memoryview(pkt)[hdr_len:]
    out: list[bytes] = []
    for index, off in enumerate(range(0, len(payload), gso_size)):
        chunk = payload[off : off + gso_size]
        length = 8 + len(chunk)
        # the length is counted twice: once in the pseudo header, once in the UDP header
        csum = _U16.pack(finish(addr_sum + 2 * length + ones_sum(chunk)))
        out.append(
            _ip_header(ip, v6, hdr_len + len(chunk), index, l4)
            + ports
            + _U16.pack(length)
            + csum
            + chunk
        )
    return out


# --------------------------------------------------------------------------- writing


class _Run:
    """Segments of one flow being joined: the first packet's headers, then payloads."""

    __slots__ = (
        "first",
        "hdr_len",
        "l4",
        "nbytes",
        "next_seq",
        "payloads",
        "psh",
        "seg",
        "size",
        "v6",
    )

    def __init__(self, pkt: bytes, l4: int, hdr_len: int, seq: int, v6: bool) -> None:
        self.first = pkt
        self.l4 = l4
        self.hdr_len = hdr_len
        self.seg = len(pkt) - hdr_len  # every segment but the last has this size
        self.payloads = [memoryview(pkt)[hdr_len:]]
        self.size = len(pkt)
        self.nbytes = len(pkt)  # of the packets as they came, for the caller's byte counters
        self.next_seq = (seq + self.seg) & 0xFFFFFFFF
        self.psh = bool(pkt[l4 + 13] & _PSH)
        self.v6 = v6

    def take(self, pkt: bytes, seq: int, payload_len: int) -> bool:
        """Append ``pkt`` if it continues this run (the caller checked flow and flags)."""
        first, hdr_len, l4 = self.first, self.hdr_len, self.l4
        if (
            seq != self.next_seq
            or self.psh
            or payload_len > self.seg
            or len(self.payloads) >= MAX_SEGMENTS
            or self.size + payload_len > MAX_SUPER_PACKET
            or self.payloads[-1].nbytes != self.seg  # a short one ends a run
            or len(pkt) - payload_len != hdr_len
            or pkt[l4 + 20 : hdr_len] != first[l4 + 20 : hdr_len]  # options (timestamps)
        ):
            return False
        if self.v6:
            if pkt[:2] != first[:2] or pkt[7] != first[7]:  # traffic class, hop limit
                return False
        elif pkt[1] != first[1] or pkt[6] >> 5 != first[6] >> 5 or pkt[8] != first[8]:
            return False  # TOS, DF, TTL
        if not _tcp_valid(pkt, l4, self.v6):
            return False
        self.payloads.append(memoryview(pkt)[hdr_len:])
        self.size += payload_len
        self.nbytes += len(pkt)
        self.next_seq = (seq + payload_len) & 0xFFFFFFFF
        self.psh = bool(pkt[l4 + 13] & _PSH)
        return True

    def frame(self) -> bytes:
        first = self.first
        if len(self.payloads) == 1:
            return PLAIN_HEADER + first
        l4, hdr_len = self.l4, self.hdr_len
        if self.v6:
            ip = first[:4] + _U16.pack(self.size - 40) + first[6:40]
            src, dst, gso_type = first[8:24], first[24:40], GSO_TCPV6
        else:
            head = first[:2] + _U16.pack(self.size) + first[4:10]
            rest = first[12:l4]
            ip = head + _U16.pack(finish(ones_sum(head + b"\0\0" + rest))) + rest
            src, dst, gso_type = first[12:16], first[16:20], GSO_TCPV4
        flags = first[l4 + 13] | (_PSH if self.psh else 0)
        partial = fold(pseudo_header_sum(src, dst, _TCP, self.size - l4))
        tcp = (
            first[l4 : l4 + 13]
            + bytes((flags,))
            + first[l4 + 14 : l4 + 16]
            + _U16.pack(partial)
            + first[l4 + 18 : hdr_len]
        )
        vnet = _HDR.pack(NEEDS_CSUM, gso_type, hdr_len, self.seg, l4, 16)
        return b"".join((vnet, ip, tcp, *self.payloads))

    @property
    def count(self) -> int:
        return len(self.payloads)


def _tcp_valid(pkt: bytes, l4: int, v6: bool) -> bool:
    src, dst = (pkt[8:24], pkt[24:40]) if v6 else (pkt[12:16], pkt[16:20])
    return valid(pseudo_header_sum(src, dst, _TCP, len(pkt) - l4) + ones_sum(memoryview(pkt)[l4:]))


def _candidate(pkt: bytes) -> tuple[bytes, int, int, int, bool] | None:
    """(flow key, l4 offset, header length, seq, is_v6) of a TCP segment that may be joined:
    plain IPv4 (no options, not a fragment) or IPv6 without extension headers, ACK or PSH|ACK
    only, with payload."""
    n = len(pkt)
    if n < 40:
        return None
    first = pkt[0]
    if first == 0x45:
        if pkt[9] != _TCP or pkt[6] & 0x3F or pkt[7] or _U16.unpack_from(pkt, 2)[0] != n:
            return None
        l4, v6, key_end = 20, False, 20
    elif first >> 4 == 6:
        if pkt[6] != _TCP or n < 60 or _U16.unpack_from(pkt, 4)[0] != n - 40:
            return None
        l4, v6, key_end = 40, True, 40
    else:
        return None
    hdr_len = l4 + (pkt[l4 + 12] >> 4) * 4
    if hdr_len < l4 + 20 or hdr_len >= n or pkt[l4 + 13] & ~_PSH != _ACK:
        return None
    # addresses, ports and the ACK number: segments of one flow in one direction
    key = pkt[key_end - (32 if v6 else 8) : key_end] + pkt[l4 : l4 + 4] + pkt[l4 + 8 : l4 + 12]
    return key, l4, hdr_len, _U32.unpack_from(pkt, l4 + 4)[0], v6


def coalesce(packets: Sequence[bytes]) -> list[tuple[bytes, int, int]]:
    """Frames to write to a vnet-hdr TUN device for ``packets``, in order: each with how many
    packets it carries and their size. A run sits where its first segment was; only a flow's
    latest run is extended, so nothing of one flow overtakes anything else of it."""
    runs: list[_Run | bytes] = []
    latest: dict[bytes, _Run] = {}
    for pkt in packets:
        found = _candidate(pkt)
        if found is None:
            runs.append(pkt)
            continue
        key, l4, hdr_len, seq, v6 = found
        run = latest.get(key)
        if run is not None and run.take(pkt, seq, len(pkt) - hdr_len):
            continue
        if not _tcp_valid(pkt, l4, v6):
            latest.pop(key, None)
            runs.append(pkt)  # left for the kernel to drop, on its own
            continue
        run = _Run(pkt, l4, hdr_len, seq, v6)
        latest[key] = run
        runs.append(run)
    return [
        (PLAIN_HEADER + item, 1, len(item))
        if isinstance(item, bytes)
        else (item.frame(), item.count, item.nbytes)
        for item in runs
    ]
