"""Path-MTU signals for packets too big to carry.

wgactors carries packets of at most 1280 bytes, but wg-quick sets an interface MTU of 1420 when
the configuration file has none, and anyone may raise the MTU of a live interface. Dropping the
larger packets silently would make TCP stall. Instead, like a router on the path, we answer
with ICMP "fragmentation needed" (IPv4, when DF is set) or ICMPv6 "packet too big", carrying
MTU 1280. The kernel then lowers the path MTU for that destination and resends smaller.

The answer is addressed from the original destination to the original sender, so that it
arrives on the interface through which that destination is routed, and quotes the start of the
offending packet, as RFC 792 / RFC 4443 require. No error is sent about an ICMP error.
"""

from __future__ import annotations

import struct

from .checksum import internet_checksum
from .packet import MAX_PACKET_SIZE, Packet

__all__ = ["internet_checksum", "too_big_reply"]

_ICMP_ERRORS_V4 = frozenset({3, 4, 5, 11, 12})
IPV6_MIN_MTU = 1280


def too_big_reply(data: bytes, mtu: int = MAX_PACKET_SIZE) -> Packet | None:
    """The ICMP error telling the sender of ``data`` to use ``mtu``; None if none is due."""
    if len(data) < 20:
        return None
    version = data[0] >> 4
    if version == 4:
        return _v4(data, mtu)
    if version == 6 and len(data) >= 48:
        return _v6(data, mtu)
    return None


def _v4(data: bytes, mtu: int) -> Packet | None:
    ihl = (data[0] & 0x0F) * 4
    if ihl < 20 or len(data) < ihl + 8:
        return None
    dont_fragment = data[6] & 0x40
    if not dont_fragment:
        return None  # the sender allows fragmentation; there is nothing to tell it
    if data[9] == 1 and data[ihl] in _ICMP_ERRORS_V4:
        return None
    quote = data[: ihl + 8]
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quote
    icmp = icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]
    total = 20 + len(icmp)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 1, 0, data[16:20], data[12:16])
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return Packet(header + icmp)


def _v6(data: bytes, mtu: int) -> Packet | None:
    if data[6] == 58 and data[40] < 128:
        return None  # an ICMPv6 error itself
    src, dst = data[8:24], data[24:40]
    quote = data[: IPV6_MIN_MTU - 40 - 8]
    body = struct.pack("!BBHI", 2, 0, 0, mtu) + quote
    pseudo = dst + src + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", internet_checksum(pseudo + body)) + body[4:]
    header = struct.pack("!IHBB", 6 << 28, len(body), 58, 64) + dst + src
    return Packet(header + body)
