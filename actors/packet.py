"""The IP packet: the one message unit that flows between actors.

Why a dedicated value type instead of passing ``bytes`` (or a borrowed buffer) around?

* **Owned, not borrowed.** A kernel-style data plane hands out views into shared ring buffers
  and relies on careful lifetime rules. Actors exchange messages across threads with no shared
  lifetime at all, so every :class:`Packet` owns a private ``bytes`` object. A ``bytearray`` or
  ``memoryview`` given to the constructor is copied, so nobody can mutate a packet after another
  actor has received it.
* **Immutable.** Because a packet cannot change after construction, it can be sent to any
  number of actors, queued, logged or retried without locks or defensive copies. ``Packet`` is
  slotted and refuses attribute assignment and deletion.
* **Validated once, at the boundary.** The constructor checks the few header fields everything
  downstream relies on (version, header length, declared length == buffer length, size limit),
  so the rest of the system can read addresses and ports without re-checking. Validation is a
  handful of length checks and byte reads because it runs once per packet on the hot path;
  richer views (:mod:`ipaddress` objects, protocol walk, ports) are computed on demand.
* **Fixed maximum size.** ``MAX_PACKET_SIZE`` is 1280 bytes, the minimum IPv6 MTU and the
  conservative tunnel MTU WireGuard deployments use so that the encapsulated datagram
  (inner packet + 32 bytes of WireGuard framing + outer UDP/IP headers) fits through almost any
  path without fragmentation. Anything bigger is refused here; the edges that meet larger
  packets (:mod:`actors.io.tun` for the host's, :mod:`actors.wireguard.oversize` for a peer's)
  fragment them (IPv4 without DF) or answer with ICMP too-big before they become Packets.

The constructor takes *exactly* one IP packet. WireGuard pads decrypted plaintext with zeros to a
multiple of 16 bytes; :meth:`Packet.from_padded` trims that padding using the length declared in
the IP header before validating.
"""

from __future__ import annotations

import ipaddress
from typing import Any, NoReturn

from .checksum import internet_checksum, pseudo_header_sum

__all__ = [
    "MAX_PACKET_SIZE",
    "AddressLike",
    "Packet",
    "PacketError",
    "address_bytes",
    "fix_ipv4_header_checksum",
    "fix_transport_checksum",
]

MAX_PACKET_SIZE = 1280
"""Largest packet accepted, in bytes: the tunnel MTU."""

IPV4_MIN_HEADER = 20
_new_object = object.__new__
IPV6_HEADER = 40

PROTO_HOPOPT = 0
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPV6_ROUTE = 43
PROTO_IPV6_FRAG = 44
PROTO_ICMPV6 = 58
PROTO_IPV6_OPTS = 60
PROTO_SCTP = 132
PROTO_UDPLITE = 136

# IPv6 extension headers skipped when looking for the transport protocol (all share the
# "next header, length in 8-octet units not counting the first 8" layout).
_SKIPPED_EXTENSIONS = frozenset({PROTO_HOPOPT, PROTO_IPV6_ROUTE, PROTO_IPV6_OPTS})
_MAX_EXTENSION_HEADERS = 8
# Transports whose header starts with 16-bit source and destination ports.
_PORT_PROTOCOLS = frozenset({PROTO_TCP, PROTO_UDP, PROTO_SCTP, PROTO_UDPLITE})
_ECHO_TYPES_V4 = frozenset({0, 8})  # echo reply, echo request
_ECHO_TYPES_V6 = frozenset({128, 129})
# Bytes an edit may not change: version and header length, total length, protocol (IPv4);
# version, payload length, next header (IPv6).
_LAYOUT_BYTES_V4 = (0, 2, 3, 9)
_LAYOUT_BYTES_V6 = (0, 4, 5, 6)

_PROTOCOL_NAMES = {
    PROTO_HOPOPT: "hopopt",
    PROTO_ICMP: "icmp",
    2: "igmp",
    4: "ipip",
    PROTO_TCP: "tcp",
    PROTO_UDP: "udp",
    41: "ipv6",
    PROTO_IPV6_ROUTE: "ipv6-route",
    PROTO_IPV6_FRAG: "ipv6-frag",
    47: "gre",
    50: "esp",
    51: "ah",
    PROTO_ICMPV6: "icmpv6",
    59: "ipv6-nonxt",
    PROTO_IPV6_OPTS: "ipv6-opts",
    PROTO_SCTP: "sctp",
    PROTO_UDPLITE: "udplite",
}


class PacketError(ValueError):
    """The buffer is not a single valid IPv4/IPv6 packet of at most ``MAX_PACKET_SIZE`` bytes."""


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """A private ``bytes`` copy of ``data`` (no copy if it already is exactly ``bytes``)."""
    if type(data) is bytes:
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"Packet needs bytes, bytearray or memoryview, not {type(data).__name__}")


def _invalid(data: bytes) -> NoReturn:
    """Raise the :class:`PacketError` explaining why ``data`` is not a valid packet.

    Kept out of the constructor so the happy path is only comparisons; this re-runs the checks
    in order and reports the first failure.
    """
    n = len(data)
    if n == 0:
        raise PacketError("empty packet")
    if n > MAX_PACKET_SIZE:
        raise PacketError(f"packet of {n} bytes exceeds the {MAX_PACKET_SIZE}-byte maximum")
    version = data[0] >> 4
    if version == 4:
        if n < IPV4_MIN_HEADER:
            raise PacketError(
                f"IPv4 packet of {n} bytes is shorter than the {IPV4_MIN_HEADER}-byte header"
            )
        header_len = (data[0] & 0x0F) * 4
        if header_len < IPV4_MIN_HEADER:
            raise PacketError(f"IPv4 header length {header_len} < {IPV4_MIN_HEADER}")
        if header_len > n:
            raise PacketError(f"IPv4 header length {header_len} exceeds buffer length {n}")
        total = (data[2] << 8) | data[3]
        raise PacketError(f"IPv4 total length {total} != buffer length {n}")
    if version == 6:
        if n < IPV6_HEADER:
            raise PacketError(
                f"IPv6 packet of {n} bytes is shorter than the {IPV6_HEADER}-byte header"
            )
        payload = (data[4] << 8) | data[5]
        raise PacketError(
            f"IPv6 length {IPV6_HEADER} + payload length {payload} = {IPV6_HEADER + payload}"
            f" != buffer length {n}"
        )
    raise PacketError(f"IP version {version} is neither 4 nor 6")


class Packet:
    """One validated, immutable IPv4 or IPv6 packet of at most ``MAX_PACKET_SIZE`` bytes.

    ``Packet(data)`` raises :class:`PacketError` unless ``data`` is exactly one packet whose
    header agrees with the buffer length; a non-buffer argument raises :class:`TypeError`.
    """

    __slots__ = ("data", "peer")

    data: bytes
    peer: bytes | None
    """The 32-byte public key of the WireGuard peer an inbound packet came from (set by the
    decrypt stage once the packet is authenticated); None on the outbound path and for packets
    a stage builds. Metadata only: two packets with the same bytes are equal whatever their
    peer."""

    def __init__(self, data: bytes | bytearray | memoryview, peer: bytes | None = None) -> None:
        if type(data) is not bytes:
            data = _as_bytes(data)
        n = len(data)
        if not 0 < n <= MAX_PACKET_SIZE:
            _invalid(data)
        first = data[0]
        version = first >> 4
        if version == 4:
            if (
                n < IPV4_MIN_HEADER
                or (first & 0x0F) < 5
                or (first & 0x0F) * 4 > n
                or ((data[2] << 8) | data[3]) != n
            ):
                _invalid(data)
        elif version == 6:
            if n < IPV6_HEADER or IPV6_HEADER + ((data[4] << 8) | data[5]) != n:
                _invalid(data)
        else:
            _invalid(data)
        if peer is not None and (type(peer) is not bytes or len(peer) != 32):
            raise TypeError("peer must be a 32-byte public key (bytes) or None")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "peer", peer)

    @classmethod
    def from_padded(cls, buf: bytes | bytearray | memoryview, peer: bytes | None = None) -> Packet:
        """The packet at the start of ``buf``, dropping trailing padding after its IP length.

        WireGuard zero-pads plaintext to a multiple of 16 bytes; the IP header's own length
        field says where the packet ends. Raises :class:`PacketError` if the header is missing
        or declares more bytes than ``buf`` holds.
        """
        data = _as_bytes(buf)
        n = len(data)
        if n == 0:
            raise PacketError("empty packet")
        version = data[0] >> 4
        if version == 4:
            if n < IPV4_MIN_HEADER:
                _invalid(data)
            length = (data[2] << 8) | data[3]
            if length < IPV4_MIN_HEADER:
                raise PacketError(f"IPv4 total length {length} < {IPV4_MIN_HEADER}")
            if length > n:
                raise PacketError(f"IPv4 total length {length} exceeds buffer length {n}")
        elif version == 6:
            if n < IPV6_HEADER:
                _invalid(data)
            length = IPV6_HEADER + ((data[4] << 8) | data[5])
            if length > n:
                raise PacketError(
                    f"IPv6 length {length} (40 + payload length) exceeds buffer length {n}"
                )
        else:
            _invalid(data)
        return cls(data if length == n else data[:length], peer)

    @classmethod
    def unpad(cls, buf: bytes, peer: bytes | None = None) -> Packet | None:
        """:meth:`from_padded` for the receive path's inner loop: ``bytes`` only, and None
        instead of an exception. It checks what the constructor checks, once, and builds the
        packet without calling it: on decrypted data this is most of the core's own cost.
        ``peer`` is not checked: the caller passes the key of the peer that authenticated
        ``buf``, which is a 32-byte public key by construction."""
        n = len(buf)
        if n < IPV4_MIN_HEADER:
            return None
        first = buf[0]
        version = first >> 4
        if version == 4:
            length = (buf[2] << 8) | buf[3]
            if not IPV4_MIN_HEADER <= (first & 0x0F) * 4 <= length:
                return None
        elif version == 6 and n >= IPV6_HEADER:
            length = IPV6_HEADER + ((buf[4] << 8) | buf[5])
        else:
            return None
        if length > n or length > MAX_PACKET_SIZE:
            return None
        packet = _new_object(cls)
        _set_data(packet, buf if length == n else buf[:length])
        _set_peer(packet, peer)
        return packet

    # --- immutability -------------------------------------------------------------------

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Packet is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Packet is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[type[Packet], tuple[bytes, bytes | None]]:
        # Slotted objects are otherwise unpickled/copied via setattr, which we refuse.
        return (type(self), (self.data, self.peer))

    def __copy__(self) -> Packet:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Packet:
        return self

    # --- value semantics ----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.data)

    def __bytes__(self) -> bytes:
        return self.data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Packet):
            return self.data == other.data
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        proto = self.protocol
        name = _PROTOCOL_NAMES.get(proto, f"proto {proto}")
        src, dst = self.src, self.dst
        sport, dport = self.src_port, self.dst_port
        if sport is None or dport is None:
            endpoints = f"{src} -> {dst}"
        elif self.version == 4:
            endpoints = f"{src}:{sport} -> {dst}:{dport}"
        else:
            endpoints = f"[{src}]:{sport} -> [{dst}]:{dport}"
        return f"Packet(v{self.version} {name} {endpoints}, {len(self.data)} bytes)"

    # --- header accessors ---------------------------------------------------------------

    @property
    def version(self) -> int:
        """4 or 6."""
        return self.data[0] >> 4

    @property
    def src_bytes(self) -> bytes:
        """The raw source address: 4 bytes for IPv4, 16 for IPv6."""
        data = self.data
        return data[12:16] if data[0] >> 4 == 4 else data[8:24]

    @property
    def dst_bytes(self) -> bytes:
        """The raw destination address: 4 bytes for IPv4, 16 for IPv6."""
        data = self.data
        return data[16:20] if data[0] >> 4 == 4 else data[24:40]

    @property
    def src(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        if self.data[0] >> 4 == 4:
            return ipaddress.IPv4Address(self.data[12:16])
        return ipaddress.IPv6Address(self.data[8:24])

    @property
    def dst(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        if self.data[0] >> 4 == 4:
            return ipaddress.IPv4Address(self.data[16:20])
        return ipaddress.IPv6Address(self.data[24:40])

    def _transport(self) -> tuple[int, int | None]:
        """``(protocol, offset of the transport header or None if there is none to read)``.

        IPv4: the protocol field; no offset for non-first fragments. IPv6: the next header
        after skipping hop-by-hop, routing and destination-options headers (at most
        ``_MAX_EXTENSION_HEADERS``); stops at anything else, including a fragment header. On
        truncated extension headers it returns the last next-header value seen, no offset.
        """
        data = self.data
        if data[0] >> 4 == 4:
            if ((data[6] << 8) | data[7]) & 0x1FFF:
                return data[9], None
            return data[9], (data[0] & 0x0F) * 4
        n = len(data)
        next_header = data[6]
        offset = IPV6_HEADER
        for _ in range(_MAX_EXTENSION_HEADERS):
            if next_header not in _SKIPPED_EXTENSIONS:
                return next_header, offset
            if offset + 2 > n:
                return next_header, None
            next_header = data[offset]
            offset += (data[offset + 1] + 1) * 8
        if next_header in _SKIPPED_EXTENSIONS:
            return next_header, None
        return next_header, offset

    @property
    def protocol(self) -> int:
        """The transport protocol number (IPv6: after skipping common extension headers)."""
        if self.data[0] >> 4 == 4:
            return self.data[9]
        return self._transport()[0]

    def _ports(self) -> tuple[int, int] | None:
        proto, offset = self._transport()
        data = self.data
        if proto not in _PORT_PROTOCOLS or offset is None or offset + 4 > len(data):
            return None
        return (data[offset] << 8) | data[offset + 1], (data[offset + 2] << 8) | data[offset + 3]

    @property
    def src_port(self) -> int | None:
        """TCP/UDP/SCTP/UDP-Lite source port, or None if absent (other protocol, fragment, …)."""
        ports = self._ports()
        return None if ports is None else ports[0]

    @property
    def dst_port(self) -> int | None:
        """TCP/UDP/SCTP/UDP-Lite destination port, or None if absent."""
        ports = self._ports()
        return None if ports is None else ports[1]

    @property
    def is_fragment(self) -> bool:
        """IPv4: MF flag set or fragment offset non-zero. IPv6: carries a Fragment header
        (reached after the skipped extension headers)."""
        data = self.data
        if data[0] >> 4 == 4:
            return bool(((data[6] << 8) | data[7]) & 0x3FFF)
        return self._transport()[0] == PROTO_IPV6_FRAG

    @property
    def ttl(self) -> int:
        """IPv4 time to live, or IPv6 hop limit."""
        data = self.data
        return data[8] if data[0] >> 4 == 4 else data[7]

    @property
    def transport_offset(self) -> int | None:
        """Where the transport header (TCP, UDP, ICMP, ...) starts, or None if this packet does
        not carry one that can be read (a non-first fragment, unparsed extension headers)."""
        return self._transport()[1]

    def _header_len(self, proto: int, offset: int) -> int | None:
        data = self.data
        if proto == PROTO_UDP:
            size = 8
        elif proto == PROTO_TCP:
            if offset + 13 > len(data):
                return None
            size = (data[offset + 12] >> 4) * 4
            if size < 20:
                return None
        elif proto in (PROTO_ICMP, PROTO_ICMPV6):
            size = 8
        else:
            return None
        return size if offset + size <= len(data) else None

    @property
    def payload(self) -> bytes | None:
        """What the transport carries after its header: UDP data, TCP data, or the ICMP body
        after the 8-byte header (type, code, checksum and the 4 bytes that depend on the type).
        None for other protocols, fragments and truncated headers."""
        proto, offset = self._transport()
        if offset is None:
            return None
        size = self._header_len(proto, offset)
        if size is None:
            return None
        return self.data[offset + size :]

    @property
    def icmp_type(self) -> int | None:
        """ICMP (IPv4) or ICMPv6 type, or None for other packets."""
        proto, offset = self._transport()
        if proto not in (PROTO_ICMP, PROTO_ICMPV6) or offset is None or offset + 4 > len(self):
            return None
        return self.data[offset]

    @property
    def icmp_code(self) -> int | None:
        """ICMP (IPv4) or ICMPv6 code, or None for other packets."""
        proto, offset = self._transport()
        if proto not in (PROTO_ICMP, PROTO_ICMPV6) or offset is None or offset + 4 > len(self):
            return None
        return self.data[offset + 1]

    @property
    def icmp_id(self) -> int | None:
        """The identifier of an ICMP or ICMPv6 echo request or reply, or None for other
        packets (what ``ping`` numbers its run with)."""
        offset = self._echo_offset()
        return None if offset is None else int.from_bytes(self.data[offset + 4 : offset + 6])

    @property
    def icmp_seq(self) -> int | None:
        """The sequence number of an ICMP or ICMPv6 echo request or reply, or None."""
        offset = self._echo_offset()
        return None if offset is None else int.from_bytes(self.data[offset + 6 : offset + 8])

    def _echo_offset(self) -> int | None:
        proto, offset = self._transport()
        if offset is None or offset + 8 > len(self.data):
            return None
        kinds = _ECHO_TYPES_V4 if proto == PROTO_ICMP else _ECHO_TYPES_V6
        if proto not in (PROTO_ICMP, PROTO_ICMPV6) or self.data[offset] not in kinds:
            return None
        return offset

    @property
    def tcp_flags(self) -> int | None:
        """The TCP flag bits (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...), or None."""
        proto, offset = self._transport()
        if proto != PROTO_TCP or offset is None or offset + 14 > len(self):
            return None
        return self.data[offset + 13]

    # --- editing ------------------------------------------------------------------------

    def replace(
        self,
        *,
        src: AddressLike | None = None,
        dst: AddressLike | None = None,
        src_port: int | None = None,
        dst_port: int | None = None,
        ttl: int | None = None,
    ) -> Packet:
        """A copy with the given fields changed and every checksum fixed: the IPv4 header's,
        and the TCP, UDP or ICMPv6 one (whose pseudo-header holds the addresses).

        Addresses keep the packet's family. Raises :class:`PacketError` for a change the packet
        cannot take: ports on a packet without them, or addresses or ports on a fragment (its
        transport checksum covers bytes this packet does not hold). The peer is kept.
        """
        data = bytearray(self.data)
        v4 = data[0] >> 4 == 4
        size = 4 if v4 else 16
        src_at, dst_at = (12, 16) if v4 else (8, 24)
        proto, offset = self._transport()
        touches_transport = (
            src is not None or dst is not None or src_port is not None or dst_port is not None
        )
        if touches_transport and self.is_fragment:
            raise PacketError("cannot change addresses or ports of a fragment")
        if src is not None:
            data[src_at : src_at + size] = address_bytes(src, size)
        if dst is not None:
            data[dst_at : dst_at + size] = address_bytes(dst, size)
        if src_port is not None or dst_port is not None:
            if proto not in _PORT_PROTOCOLS or offset is None or offset + 4 > len(data):
                raise PacketError(f"{self!r} has no ports to change")
            if src_port is not None:
                data[offset : offset + 2] = _port(src_port).to_bytes(2, "big")
            if dst_port is not None:
                data[offset + 2 : offset + 4] = _port(dst_port).to_bytes(2, "big")
        if ttl is not None:
            if not 0 <= ttl <= 255:
                raise PacketError(f"TTL {ttl} is not in 0..255")
            data[8 if v4 else 7] = ttl
        if v4:
            fix_ipv4_header_checksum(data)
        if touches_transport and offset is not None:
            fix_transport_checksum(data, proto, offset)
        return Packet(bytes(data), self.peer)

    def edit(self, offset: int, data: bytes | bytearray | memoryview) -> Packet:
        """A copy with ``data`` written over the bytes at ``offset`` (counted from the start of
        the IP header) and every checksum fixed: the IPv4 header's and the transport's.

        For changes :meth:`replace` has no name for: a TCP option, a DNS answer, an ICMP body.
        The size stays: an edit that would run past the end, or that touches what says how the
        packet is laid out (version, header length, total or payload length, protocol or next
        header), raises :class:`PacketError`, and so does an edit of a fragment's transport
        bytes or addresses (its transport checksum covers bytes this packet does not hold).
        The peer is kept.
        """
        new = bytes(data)
        end = offset + len(new)
        if offset < 0 or end > len(self.data):
            raise PacketError(
                f"bytes {offset}..{end} are not inside a {len(self.data)}-byte packet"
            )
        v4 = self.data[0] >> 4 == 4
        for at in _LAYOUT_BYTES_V4 if v4 else _LAYOUT_BYTES_V6:
            if offset <= at < end and self.data[at] != new[at - offset]:
                raise PacketError(f"byte {at} says how the packet is laid out: use build.ip")
        proto, transport = self._transport()
        addresses = (12, 20) if v4 else (8, 40)
        touches_transport = (transport is not None and end > transport) or (
            offset < addresses[1] and end > addresses[0]
        )
        if touches_transport and self.is_fragment:
            raise PacketError("cannot change addresses or transport bytes of a fragment")
        buf = bytearray(self.data)
        buf[offset:end] = new
        if v4:
            fix_ipv4_header_checksum(buf)
        if touches_transport and transport is not None:
            fix_transport_checksum(buf, proto, transport)
        return Packet(bytes(buf), self.peer)


AddressLike = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address
"""An IP address as text, raw bytes (4 or 16) or an :mod:`ipaddress` object."""


def address_bytes(address: AddressLike, size: int | None = None) -> bytes:
    """The raw bytes of ``address``; ``size`` (4 or 16) demands one family."""
    if isinstance(address, bytes):
        raw = address
    elif isinstance(address, str):
        try:
            raw = ipaddress.ip_address(address).packed
        except ValueError as e:
            raise PacketError(str(e)) from None
    elif isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raw = address.packed
    else:
        raise TypeError(f"an address is text, bytes or ipaddress, not {type(address).__name__}")
    if len(raw) not in (4, 16) or (size is not None and len(raw) != size):
        want = f"IPv{4 if size == 4 else 6}" if size else "IPv4 or IPv6"
        raise PacketError(f"address {address!r} is not {want}")
    return raw


def _port(port: int) -> int:
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise PacketError(f"port {port!r} is not in 0..65535")
    return port


def fix_ipv4_header_checksum(data: bytearray) -> None:
    """Recompute the IPv4 header checksum of ``data`` in place."""
    ihl = (data[0] & 0x0F) * 4
    data[10:12] = b"\0\0"
    data[10:12] = internet_checksum(data[:ihl]).to_bytes(2, "big")


def fix_transport_checksum(data: bytearray, proto: int, offset: int) -> None:
    """Recompute the TCP, UDP, ICMP or ICMPv6 checksum of ``data`` (a whole, unfragmented
    packet) in place; other protocols are left alone. An IPv4 UDP checksum of 0 (none) stays
    0, and a computed 0 is sent as 0xFFFF, as RFC 768 asks."""
    if proto == PROTO_TCP:
        at = offset + 16
    elif proto == PROTO_UDP:
        at = offset + 6
    elif proto in (PROTO_ICMP, PROTO_ICMPV6):
        at = offset + 2
    else:
        return
    if at + 2 > len(data):
        return
    v4 = data[0] >> 4 == 4
    if proto == PROTO_UDP and v4 and data[at] == 0 and data[at + 1] == 0:
        return
    data[at : at + 2] = b"\0\0"
    segment = data[offset:]
    if proto == PROTO_ICMP:
        initial = 0
    elif v4:
        initial = pseudo_header_sum(bytes(data[12:16]), bytes(data[16:20]), proto, len(segment))
    else:
        initial = pseudo_header_sum(bytes(data[8:24]), bytes(data[24:40]), proto, len(segment))
    value = internet_checksum(segment, initial)
    if value == 0 and proto == PROTO_UDP:
        value = 0xFFFF
    data[at : at + 2] = value.to_bytes(2, "big")


# The slots' own setters: what object.__setattr__ ends up calling, without the name look-up.
_set_data = Packet.__dict__["data"].__set__
_set_peer = Packet.__dict__["peer"].__set__
