"""TCP MSS clamping: SYNs announce a segment size that fits the tunnel.

A TCP connection picks its segment size from the MSS option of its SYN and SYN-ACK, and each
end derives that from its own interface's MTU. Where a path has a smaller MTU than the ends
believe (wgactors carries at most 1280-byte packets, while `wg-quick` gives the interface an MTU
of 1420), full-sized segments are too big: they are fragmented or answered with ICMP too-big,
and where that ICMP is filtered the connection stalls after the handshake. Clamping the MSS of
every SYN that crosses the tunnel avoids the round trip altogether; it is what
``iptables -j TCPMSS --clamp-mss-to-pmtu`` does, done in the tunnel itself::

    [[outbound]]
    use = "mssclamp"            # or actors.contrib.mssclamp:MssClamp
    options = { mtu = 1280 }

    [[inbound]]
    use = "mssclamp"

Put it on both paths: the outbound one clamps the SYNs of local clients, the inbound one the
SYNs of the peer's (whose SYN-ACKs the outbound one then clamps, and the other way round). The
limit is ``mtu`` minus 40 bytes (IPv4 and TCP headers) or 60 (IPv6 and TCP), and the checksum is
fixed. A SYN without an MSS option is left alone: its default (536, or 1220 over IPv6) already
fits. Stats: ``mss_clamped`` (SYNs changed), ``mss_malformed`` (SYNs with option bytes that do
not parse, passed unchanged).
"""

from __future__ import annotations

from typing import Any

from ..build import TCP_SYN, TCPOPT_EOL, TCPOPT_MSS, TCPOPT_NOP
from ..packet import MAX_PACKET_SIZE, PROTO_TCP, Packet
from ..stage import Stage

__all__ = ["MIN_MTU", "MssClamp", "clamp_mss"]

MIN_MTU = 576
"""The smallest ``mtu`` accepted: the IPv4 datagram every host must take (RFC 791)."""
MAX_MTU = 65535
_TCP_HEADER = 20
_OVERHEAD = {4: 20 + _TCP_HEADER, 6: 40 + _TCP_HEADER}  # IP + TCP headers without options


def clamp_mss(packet: Packet, mtu: int) -> tuple[Packet, bool] | None:
    """``(packet, changed)``: a SYN (or SYN-ACK) with its MSS option lowered to fit ``mtu``,
    or the packet itself when nothing needs lowering. None when the SYN's options do not
    parse (a truncated option, a length below 2): such a packet is best left as it is."""
    flags = packet.tcp_flags
    offset = packet.transport_offset
    if flags is None or not flags & TCP_SYN or offset is None or packet.is_fragment:
        return packet, False
    data = packet.data
    end = offset + (data[offset + 12] >> 4) * 4
    if end > len(data) or end < offset + _TCP_HEADER:
        return None
    limit = mtu - _OVERHEAD[packet.version]
    at = offset + _TCP_HEADER
    while at < end:
        kind = data[at]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            at += 1
            continue
        if at + 1 >= end or data[at + 1] < 2 or at + data[at + 1] > end:
            return None
        size = data[at + 1]
        if kind == TCPOPT_MSS:
            if size != 4:
                return None
            if int.from_bytes(data[at + 2 : at + 4], "big") <= limit:
                return packet, False
            return packet.edit(at + 2, limit.to_bytes(2, "big")), True
        at += size
    return packet, False


class MssClamp(Stage):
    """Lowers the MSS option of TCP SYN and SYN-ACK segments to what fits the tunnel's MTU."""

    def __init__(self, mtu: int = MAX_PACKET_SIZE) -> None:
        super().__init__()
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
            raise ValueError(f"mtu must be an integer in {MIN_MTU}..{MAX_MTU}, not {mtu!r}")
        self.mtu = mtu
        self.clamped = 0
        self.malformed = 0

    def process(self, packet: Packet) -> Packet:
        if packet.protocol != PROTO_TCP:
            return packet
        result = clamp_mss(packet, self.mtu)
        if result is None:
            self.malformed += 1
            return packet
        out, changed = result
        self.clamped += changed
        return out

    def stats_extra(self) -> dict[str, Any]:
        return {"mss_clamped": self.clamped, "mss_malformed": self.malformed}
