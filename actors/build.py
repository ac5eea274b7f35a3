"""Building packets: IPv4/IPv6 with UDP, TCP or ICMP inside, every checksum filled in.

A stage that answers (a DNS reply, a TCP reset, an ICMP error, an echo reply) needs a whole,
valid IP packet, and a wrong checksum makes the receiver drop it silently. These functions are
the only place such headers are packed, so a stage never writes ``struct.pack`` itself::

    from actors import build

    answer = build.udp(query.dst, query.src, 53, query.src_port, payload)
    reset = build.tcp_reset(segment)        # None when no reset is due

The family follows the addresses (both must be of one family). To change a field of an existing
packet instead, use :meth:`actors.Packet.replace`.
"""

from __future__ import annotations

import struct

from .checksum import internet_checksum, pseudo_header_sum
from .packet import (
    IPV6_HEADER,
    MAX_PACKET_SIZE,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    AddressLike,
    Packet,
    PacketError,
    address_bytes,
)

__all__ = [
    "DEFAULT_TTL",
    "TCPOPT_EOL",
    "TCPOPT_MSS",
    "TCPOPT_NOP",
    "TCPOPT_SACK_PERMITTED",
    "TCPOPT_TIMESTAMP",
    "TCPOPT_WSCALE",
    "TCP_ACK",
    "TCP_FIN",
    "TCP_PSH",
    "TCP_RST",
    "TCP_SYN",
    "echo_reply",
    "icmp",
    "ip",
    "port_unreachable",
    "tcp",
    "tcp_options",
    "tcp_reset",
    "udp",
]

DEFAULT_TTL = 64
"""TTL (hop limit) of built packets, as Linux uses."""

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
# TCP option kinds (RFC 9293 3.2, RFC 7323, RFC 2018)
TCPOPT_EOL, TCPOPT_NOP, TCPOPT_MSS, TCPOPT_WSCALE = 0, 1, 2, 3
TCPOPT_SACK_PERMITTED, TCPOPT_TIMESTAMP = 4, 8
_TCP_MAX_OPTIONS = 40  # bytes: the data offset field tops out at 15 words
_TCP_MAX_WSCALE = 14  # RFC 7323 2.3

_ICMP_ECHO_REQUEST, _ICMP_ECHO_REPLY = 8, 0
_ICMPV6_ECHO_REQUEST, _ICMPV6_ECHO_REPLY = 128, 129
_ICMP_UNREACHABLE, _ICMP_PORT_UNREACHABLE = 3, 3
_ICMPV6_UNREACHABLE, _ICMPV6_PORT_UNREACHABLE = 1, 4
_ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
_ICMP_ERROR_QUOTE_V4 = 576 - 20 - 8  # RFC 1812 4.3.2.3: the error fits in 576 bytes


def _pair(src: AddressLike, dst: AddressLike) -> tuple[bytes, bytes]:
    s, d = address_bytes(src), address_bytes(dst)
    if len(s) != len(d):
        raise PacketError("source and destination are of different IP families")
    return s, d


def ip(
    src: AddressLike,
    dst: AddressLike,
    protocol: int,
    payload: bytes,
    *,
    ttl: int = DEFAULT_TTL,
    ident: int = 0,
) -> Packet:
    """An IPv4 (DF set) or IPv6 packet carrying ``payload`` as protocol ``protocol``. The
    payload's own checksum is the caller's business; the IPv4 header's is filled in."""
    s, d = _pair(src, dst)
    if not 0 <= ttl <= 255 or not 0 <= protocol <= 255:
        raise PacketError("ttl and protocol are 0..255")
    if len(s) == 4:
        total = 20 + len(payload)
        if total > MAX_PACKET_SIZE:
            raise PacketError(f"packet of {total} bytes exceeds {MAX_PACKET_SIZE}")
        header = bytearray(
            struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0x4000, ttl, protocol, 0, s, d
            )
        )
        header[10:12] = internet_checksum(header).to_bytes(2, "big")
        return Packet(bytes(header) + payload)
    total = IPV6_HEADER + len(payload)
    if total > MAX_PACKET_SIZE:
        raise PacketError(f"packet of {total} bytes exceeds {MAX_PACKET_SIZE}")
    return Packet(struct.pack("!IHBB", 6 << 28, len(payload), protocol, ttl) + s + d + payload)


def _with_checksum(
    s: bytes, d: bytes, protocol: int, segment: bytearray, at: int, pseudo: bool = True
) -> bytes:
    initial = pseudo_header_sum(s, d, protocol, len(segment)) if pseudo else 0
    value = internet_checksum(segment, initial)
    if value == 0 and protocol == PROTO_UDP:
        value = 0xFFFF
    segment[at : at + 2] = value.to_bytes(2, "big")
    return bytes(segment)


def udp(
    src: AddressLike,
    dst: AddressLike,
    src_port: int,
    dst_port: int,
    payload: bytes = b"",
    *,
    ttl: int = DEFAULT_TTL,
) -> Packet:
    """A UDP datagram in IPv4 or IPv6, checksum included."""
    s, d = _pair(src, dst)
    segment = bytearray(struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload)
    return ip(s, d, PROTO_UDP, _with_checksum(s, d, PROTO_UDP, segment, 6), ttl=ttl)


def tcp(
    src: AddressLike,
    dst: AddressLike,
    src_port: int,
    dst_port: int,
    *,
    seq: int = 0,
    ack: int = 0,
    flags: int = TCP_ACK,
    window: int = 65535,
    payload: bytes = b"",
    ttl: int = DEFAULT_TTL,
    options: bytes = b"",
) -> Packet:
    """A TCP segment in IPv4 or IPv6, checksum included. ``options`` are the raw option
    bytes (see :func:`tcp_options`), padded here to a multiple of 4 with end-of-list."""
    s, d = _pair(src, dst)
    if len(options) > _TCP_MAX_OPTIONS:
        raise PacketError(f"{len(options)} bytes of TCP options exceed {_TCP_MAX_OPTIONS}")
    options += bytes(-len(options) % 4)  # EOL padding
    header = struct.pack(
        "!HHIIBBHHH",
        src_port,
        dst_port,
        seq & 0xFFFFFFFF,
        ack & 0xFFFFFFFF,
        (5 + len(options) // 4) << 4,
        flags & 0xFF,
        window,
        0,
        0,
    )
    segment = bytearray(header + options + payload)
    return ip(s, d, PROTO_TCP, _with_checksum(s, d, PROTO_TCP, segment, 16), ttl=ttl)


def tcp_options(
    *,
    mss: int | None = None,
    sack_permitted: bool = False,
    timestamps: tuple[int, int] | None = None,
    wscale: int | None = None,
) -> bytes:
    """TCP option bytes for :func:`tcp`, laid out as Linux sends them on a SYN: MSS,
    SACK-permitted and timestamps (NOP-aligned), window scale (RFC 9293, 7323, 2018).
    ``timestamps`` is (TSval, TSecr)."""
    out = b""
    if mss is not None:
        if not 0 <= mss <= 0xFFFF:
            raise PacketError(f"MSS {mss} is not in 0..65535")
        out += struct.pack("!BBH", TCPOPT_MSS, 4, mss)
    if timestamps is not None:
        tsval, tsecr = timestamps
        head = struct.pack("!BB", TCPOPT_SACK_PERMITTED, 2) if sack_permitted else b"\1\1"
        out += head + struct.pack("!BBII", TCPOPT_TIMESTAMP, 10, tsval & 0xFFFFFFFF, tsecr)
    elif sack_permitted:
        out += b"\1\1" + struct.pack("!BB", TCPOPT_SACK_PERMITTED, 2)
    if wscale is not None:
        if not 0 <= wscale <= _TCP_MAX_WSCALE:
            raise PacketError(f"window scale {wscale} is not in 0..{_TCP_MAX_WSCALE}")
        out += b"\1" + struct.pack("!BBB", TCPOPT_WSCALE, 3, wscale)
    return out


def icmp(
    src: AddressLike,
    dst: AddressLike,
    type: int,
    code: int,
    body: bytes = b"",
    *,
    ttl: int = DEFAULT_TTL,
) -> Packet:
    """An ICMP message (ICMPv6 for IPv6 addresses): ``body`` is what follows type, code and
    checksum (for an echo: identifier, sequence number, data)."""
    s, d = _pair(src, dst)
    segment = bytearray(struct.pack("!BBH", type, code, 0) + body)
    if len(s) == 4:
        return ip(s, d, PROTO_ICMP, _with_checksum(s, d, PROTO_ICMP, segment, 2, False), ttl=ttl)
    return ip(s, d, PROTO_ICMPV6, _with_checksum(s, d, PROTO_ICMPV6, segment, 2), ttl=ttl)


# --- answers ---------------------------------------------------------------------------------


def echo_reply(request: Packet, *, ttl: int = DEFAULT_TTL) -> Packet | None:
    """The echo reply to an ICMP or ICMPv6 echo request, or None if ``request`` is not one."""
    body = request.payload
    kind = request.icmp_type
    if body is None or kind is None or request.icmp_code != 0:
        return None
    offset = request.transport_offset
    assert offset is not None
    rest = request.data[offset + 4 : offset + 8]  # identifier and sequence number
    if request.version == 4 and kind == _ICMP_ECHO_REQUEST:
        reply = _ICMP_ECHO_REPLY
    elif request.version == 6 and kind == _ICMPV6_ECHO_REQUEST:
        reply = _ICMPV6_ECHO_REPLY
    else:
        return None
    return icmp(request.dst_bytes, request.src_bytes, reply, 0, rest + body, ttl=ttl)


def tcp_reset(segment: Packet, *, ttl: int = DEFAULT_TTL) -> Packet | None:
    """The RST that refuses ``segment`` (RFC 9293 3.10.7.1, "connection refused"), or None
    for a segment that must not be answered: a reset itself, or a fragment."""
    flags = segment.tcp_flags
    offset = segment.transport_offset
    if flags is None or offset is None or flags & TCP_RST or segment.payload is None:
        return None
    data = segment.data
    sport, dport, seq, ack = struct.unpack_from("!HHII", data, offset)
    if flags & TCP_ACK:
        return tcp(
            segment.dst_bytes, segment.src_bytes, dport, sport, seq=ack, flags=TCP_RST, ttl=ttl
        )
    length = len(segment.payload) + (1 if flags & TCP_SYN else 0) + (1 if flags & TCP_FIN else 0)
    return tcp(
        segment.dst_bytes,
        segment.src_bytes,
        dport,
        sport,
        seq=0,
        ack=seq + length,
        flags=TCP_RST | TCP_ACK,
        window=0,
        ttl=ttl,
    )


def port_unreachable(packet: Packet, *, ttl: int = DEFAULT_TTL) -> Packet | None:
    """ICMP port unreachable (type 3 code 3), or ICMPv6 destination unreachable code 4, quoting
    the start of ``packet``, from its destination to its source. None when RFC 1122 / RFC 4443
    forbid an error: about an ICMP error, a non-first fragment, or a multicast or broadcast."""
    dst = packet.dst_bytes
    data = packet.data
    if packet.version == 4:
        if dst[0] >= 224 or dst == b"\xff\xff\xff\xff" or packet.transport_offset is None:
            return None
        if packet.protocol == PROTO_ICMP and packet.icmp_type in _ICMP_ERROR_TYPES:
            return None
        quote = data[:_ICMP_ERROR_QUOTE_V4]
        return icmp(
            dst,
            packet.src_bytes,
            _ICMP_UNREACHABLE,
            _ICMP_PORT_UNREACHABLE,
            bytes(4) + quote,
            ttl=ttl,
        )
    if dst[0] == 0xFF:
        return None
    kind = packet.icmp_type
    if packet.protocol == PROTO_ICMPV6 and kind is not None and kind < 128:
        return None
    quote = data[: MAX_PACKET_SIZE - IPV6_HEADER - 8]
    return icmp(
        dst,
        packet.src_bytes,
        _ICMPV6_UNREACHABLE,
        _ICMPV6_PORT_UNREACHABLE,
        bytes(4) + quote,
        ttl=ttl,
    )
