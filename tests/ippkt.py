"""Builders for real IP packets (with correct checksums) that a kernel will accept."""

from __future__ import annotations

import ipaddress
import struct

from actors import Packet
from actors.icmp import internet_checksum as checksum

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0x1234,
        0x4000,
        ttl,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


def icmp_echo(src: str, dst: str, ident: int, seq: int, data: bytes, reply: bool = False) -> Packet:
    """An ICMP (v4) or ICMPv6 echo request or reply, chosen by the address family."""
    if ":" not in src:
        kind = ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST
        body = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + data
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        return Packet(ipv4(src, dst, 1, body))
    kind = ICMP6_ECHO_REPLY if reply else ICMP6_ECHO_REQUEST
    body = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + data
    pseudo = (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!I3xB", len(body), 58)
    )
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    return Packet(ipv6(src, dst, 58, body))


def parse_echo(packet: Packet) -> tuple[int, int, int, bytes]:
    """(type, ident, seq, data) of an ICMP/ICMPv6 echo packet."""
    raw = bytes(packet)
    offset = 20 if packet.version == 4 else 40
    kind, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", raw, offset)
    return kind, ident, seq, raw[offset + 8 :]


def echo_reply_for(request: Packet) -> Packet:
    _kind, ident, seq, data = parse_echo(request)
    return icmp_echo(str(request.dst), str(request.src), ident, seq, data, reply=True)


_MF, _DF = 0x2000, 0x4000


def reassemble(fragments: list[bytes]) -> bytes:
    """What a receiving host rebuilds (RFC 791 3.2), checking what it relies on as it goes:
    one datagram (same addresses, protocol and ID), payloads that tile it exactly, MF on every
    piece but the last, the first fragment's header (with its options) heading the result."""
    keyed = {(f[12:20], f[9], f[4:6]) for f in fragments}
    assert len(keyed) == 1, "fragments of more than one datagram"
    pieces = []
    for f in fragments:
        ihl = (f[0] & 0x0F) * 4
        assert checksum(f[:ihl]) == 0, "bad header checksum"
        (total,) = struct.unpack_from("!H", f, 2)
        assert total == len(f)
        (word,) = struct.unpack_from("!H", f, 6)
        assert not word & _DF
        pieces.append(((word & 0x1FFF) * 8, bool(word & _MF), f[:ihl], f[ihl:]))
    pieces.sort(key=lambda p: p[0])
    payload = b""
    for offset, more, _, data in pieces:
        assert offset == len(payload), "a gap or an overlap"
        if more:
            assert len(data) % 8 == 0, "a fragment before the last must carry 8-byte units"
        payload += data
    assert [p[1] for p in pieces] == [True] * (len(pieces) - 1) + [False]
    header = bytearray(pieces[0][2])
    assert header[0] & 0x0F == len(header) // 4
    header[2:4] = struct.pack("!H", len(header) + len(payload))
    header[6:8] = b"\0\0"
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return bytes(header) + payload
