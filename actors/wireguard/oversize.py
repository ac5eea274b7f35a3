"""Inner packets above our 1280-byte MTU, as a router whose next hop has MTU 1280 treats them.

A peer at wg-quick's default MTU (1420) sends inner packets of up to 1420 bytes. wgactors
carries at most 1280 (see :mod:`actors.packet`), so the receive path behaves like a router
forwarding onto a 1280-byte link (RFC 791, RFC 1191, RFC 8201):

- IPv4 without DF is fragmented into fragments of at most 1280 bytes, which the receiving host
  reassembles;
- IPv4 with DF, and IPv6 (which routers never fragment), are dropped, and the sender is told
  with ICMP "fragmentation needed" / ICMPv6 "packet too big" carrying MTU 1280, which travels
  back through the tunnel. Those replies are rate-limited, as a router's ICMP errors are.

The TUN reader applies the same rules to what the host sends at a raised MTU
(:class:`actors.io.tun.HostOversize`), with its own bucket.

Pure functions and a token bucket over ``now``: no I/O, no clock.
"""

from __future__ import annotations

import struct
from typing import Final

from ..icmp import internet_checksum
from ..packet import MAX_PACKET_SIZE, Packet, PacketError

__all__ = [
    "MAX_INNER_PACKET",
    "TOO_BIG_REPLIES_BURST",
    "TOO_BIG_REPLIES_PER_SECOND",
    "TooBigLimiter",
    "dont_fragment",
    "fragment_v4",
    "oversize_packet",
]

# The largest inner packet considered at all (the IPv4 / IPv6 length fields' limit).
MAX_INNER_PACKET: Final = 65535
# ICMP too-big replies per second sent back into the tunnel, and the burst allowed (the kernel
# limits ICMP errors to about one per second per destination after a burst; one bucket per
# device is enough here since the replies only go to authenticated peers).
TOO_BIG_REPLIES_PER_SECOND: Final = 10.0
TOO_BIG_REPLIES_BURST: Final = 10

_IPV4_DF: Final = 0x4000
_IPV4_MF: Final = 0x2000
_IPV4_OFFSET_MASK: Final = 0x1FFF
_IPV4_MAX_DATAGRAM: Final = 0xFFFF  # bytes: where the total length, and so every offset, ends


def oversize_packet(plaintext: bytes) -> bytes | None:
    """The IP packet at the start of ``plaintext`` if it is a well-formed one longer than
    MAX_PACKET_SIZE (padding removed); None if it is not a packet we could forward."""
    if len(plaintext) < 20:
        return None
    version = plaintext[0] >> 4
    if version == 4:
        ihl = (plaintext[0] & 0x0F) * 4
        length = (plaintext[2] << 8) | plaintext[3]
        if ihl < 20 or length < ihl:
            return None
    elif version == 6:
        if len(plaintext) < 40:
            return None
        length = 40 + ((plaintext[4] << 8) | plaintext[5])
    else:
        return None
    if not MAX_PACKET_SIZE < length <= min(len(plaintext), MAX_INNER_PACKET):
        return None
    return plaintext[:length]


def dont_fragment(packet: bytes) -> bool:
    """True unless ``packet`` is IPv4 without DF: IPv6 is never fragmented on the way."""
    return packet[0] >> 4 != 4 or bool(packet[6] & 0x40)


def source_address(packet: bytes) -> bytes:
    return packet[12:16] if packet[0] >> 4 == 4 else packet[8:24]


def fragment_v4(
    packet: bytes, mtu: int = MAX_PACKET_SIZE, peer: bytes | None = None
) -> list[Packet]:
    """Split an IPv4 packet without DF into fragments of at most ``mtu`` bytes (RFC 791 3.2).
    A packet that is itself a fragment is split further, keeping its offset and MF flag. Every
    fragment carries ``peer``, the peer the whole packet came from."""
    ihl = (packet[0] & 0x0F) * 4
    header, payload = packet[:ihl], packet[ihl:]
    flags_offset = struct.unpack_from("!H", packet, 6)[0]
    if flags_offset & _IPV4_DF:
        raise ValueError("DF is set: the packet must not be fragmented")
    base = flags_offset & _IPV4_OFFSET_MASK
    last_more = flags_offset & _IPV4_MF
    if base * 8 + len(payload) > _IPV4_MAX_DATAGRAM:  # its pieces' offsets would not fit
        raise ValueError("the fragment ends past the largest datagram IPv4 can reassemble")
    later_header = header[:20] + _copied_options(header[20:])
    out: list[Packet] = []
    pos = 0
    while pos < len(payload):
        head = header if pos == 0 else later_header
        room = (mtu - len(head)) & ~7
        if room <= 0:
            raise ValueError("header too long for the MTU")
        chunk = payload[pos : pos + room]
        more = last_more if pos + len(chunk) >= len(payload) else _IPV4_MF
        h = bytearray(head)
        h[0] = 0x40 | len(head) // 4
        struct.pack_into("!H", h, 2, len(head) + len(chunk))
        struct.pack_into("!H", h, 6, more | (base + pos // 8))
        h[10:12] = b"\0\0"
        struct.pack_into("!H", h, 10, internet_checksum(bytes(h)))
        try:
            out.append(Packet(bytes(h) + chunk, peer))
        except PacketError as e:  # pragma: no cover - the fragment is built to be valid
            raise ValueError(str(e)) from None
        pos += len(chunk)
    return out


def _copied_options(options: bytes) -> bytes:
    """The options that RFC 791 says every fragment carries (copy flag set), padded to 4."""
    kept = bytearray()
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:  # end of options
            break
        if kind == 1:  # no-op
            i += 1
            continue
        if i + 1 >= len(options) or not 2 <= options[i + 1] <= len(options) - i:
            break  # malformed: keep what was well-formed
        size = options[i + 1]
        if kind & 0x80:
            kept += options[i : i + size]
        i += size
    kept += bytes(-len(kept) % 4)
    return bytes(kept)


class TooBigLimiter:
    """A token bucket for ICMP too-big replies: bounded work and traffic however much arrives."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(
        self, rate: float = TOO_BIG_REPLIES_PER_SECOND, burst: int = TOO_BIG_REPLIES_BURST
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = float("-inf")

    def allow(self, now: float) -> bool:
        if now > self._last:
            elapsed = now - self._last
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
