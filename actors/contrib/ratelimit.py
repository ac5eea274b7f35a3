"""A bandwidth limit per WireGuard peer: one token bucket each, measured at arrival time.

What users reach for ``tc`` to do, done where the peer is known: on the inbound path a packet's
peer is the one that sent it (``packet.peer``, authenticated by the handshake), on the outbound
path the peer its destination routes to (the AllowedIPs, :meth:`actors.Stage.peer_for`). One
peer that floods cannot take the bandwidth of the others::

    [[inbound]]
    use = "ratelimit"            # or actors.contrib.ratelimit:PeerRateLimit
    options = { rate = "10mbit", burst = "64kb" }

    [[outbound]]
    use = "ratelimit"
    options = { rate = "10mbit", burst = "64kb", packets = 2000 }

``rate`` is in bits per second: an integer, or a string with a unit, ``bit``, ``kbit``,
``mbit`` or ``gbit`` (powers of 1000, as in ``tc``). ``burst`` is the bucket's size in bytes:
an integer, or a string in ``b``, ``kb``, ``mb`` (powers of 1024, as in ``tc``); by default what
the rate carries in :data:`DEFAULT_BURST_SECONDS`, and never less than two full packets.
``packets`` (optional) adds a second bucket per peer, in packets per second, whose burst is one
second of them. A packet passes if every bucket of its peer holds enough for it, and then takes
its share from each; otherwise it is dropped, counted under ``rate_bytes`` or
``rate_packets``. It does not queue: a limit by dropping is what TCP's congestion control
expects, and what bounds memory.

Tokens are counted against the time the packet's batch was read from the kernel
(:attr:`actors.Stage.now`), not the time the stage reaches it, so a backlog in front of the
stage does not turn into a burst. Packets with no peer (outbound to an address no peer
routes to) pass, counted as ``rate_no_peer``. The table of buckets holds at most
:data:`MAX_PEERS` peers; beyond that the one seen least recently is forgotten (and starts again
with a full bucket). Stats: ``rate_peers`` (peers in the table), ``rate_passed``,
``rate_limited`` (drops of both kinds), ``rate_no_peer``, ``rate_evicted``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from ..packet import MAX_PACKET_SIZE, Packet
from ..stage import Drop, Stage, Verdict

__all__ = [
    "DEFAULT_BURST_SECONDS",
    "MAX_PEERS",
    "MAX_RATE",
    "PeerRateLimit",
    "parse_rate",
    "parse_size",
]

MAX_PEERS = 65_536
"""Buckets one stage keeps (one per peer): about 200 bytes each, some 13 MB at most."""
MAX_RATE = 100_000_000_000
"""The largest ``rate`` accepted: 100 Gbit/s."""
MAX_BURST = 1 << 30
"""The largest ``burst`` accepted: 1 GiB."""
MAX_PACKETS = 10_000_000
"""The largest ``packets`` accepted (per second)."""
DEFAULT_BURST_SECONDS = 0.05
"""What the default ``burst`` holds: this many seconds of the rate."""
MIN_BURST = 2 * MAX_PACKET_SIZE
"""The smallest default ``burst``: a smaller bucket could never pass a full packet twice."""

_RATE_UNITS = {"bit": 1, "kbit": 1000, "mbit": 1000**2, "gbit": 1000**3}
_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2}
_QUANTITY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")
DROP_BYTES = Drop("rate_bytes")
DROP_PACKETS = Drop("rate_packets")


def _quantity(value: object, units: dict[str, int], what: str, default_unit: str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{what} is a number or a string like {default_unit}, not a bool")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise TypeError(f"{what} is a number or a string, not {type(value).__name__}")
    match = _QUANTITY.fullmatch(value.lower())
    if match is None or match.group(2) not in units:
        raise ValueError(
            f"{what} {value!r}: a number with one of the units {', '.join(units)} "
            f"(e.g. {default_unit!r})"
        )
    return float(match.group(1)) * units[match.group(2)]


def parse_rate(value: object) -> float:
    """Bits per second from an integer or a string like ``"10mbit"`` (units of 1000)."""
    rate = _quantity(value, _RATE_UNITS, "rate", "10mbit")
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be above 0 and at most {MAX_RATE} bit/s, not {value!r}")
    return rate


def parse_size(value: object) -> float:
    """Bytes from an integer or a string like ``"64kb"`` (units of 1024)."""
    size = _quantity(value, _SIZE_UNITS, "burst", "64kb")
    if not MAX_PACKET_SIZE <= size <= MAX_BURST:
        raise ValueError(
            f"burst must be {MAX_PACKET_SIZE}..{MAX_BURST} bytes (a full packet at least), "
            f"not {value!r}"
        )
    return size


class _Bucket:
    """One peer's tokens (bytes, and packets if limited) and when they were last filled."""

    __slots__ = ("bytes", "packets", "stamp")

    def __init__(self, full_bytes: float, full_packets: float, now: float) -> None:
        self.bytes = full_bytes
        self.packets = full_packets
        self.stamp = now


class PeerRateLimit(Stage):
    """A token bucket per peer; options ``rate``, ``burst`` and ``packets`` (see the module)."""

    def __init__(
        self, rate: int | str, burst: int | str | None = None, packets: int | None = None
    ) -> None:
        super().__init__()
        bits = parse_rate(rate)
        self.rate = bits / 8  # bytes per second
        if burst is None:
            self.burst = max(float(MIN_BURST), self.rate * DEFAULT_BURST_SECONDS)
        else:
            self.burst = parse_size(burst)
        if packets is not None and (
            isinstance(packets, bool)
            or not isinstance(packets, int)
            or not 0 < packets <= MAX_PACKETS
        ):
            raise ValueError(f"packets is a number per second, 1..{MAX_PACKETS}, not {packets!r}")
        self.packet_rate = float(packets) if packets is not None else None
        self.buckets: OrderedDict[bytes, _Bucket] = OrderedDict()
        self.passed = 0
        self.limited = 0
        self.no_peer = 0
        self.evicted = 0

    def _peer(self, packet: Packet) -> bytes | None:
        peer = packet.peer
        if peer is None and self.context.path != "inbound":
            peer = self.peer_for(packet.dst_bytes)
        return peer

    def process(self, packet: Packet) -> Verdict:
        peer = self._peer(packet)
        if peer is None:
            self.no_peer += 1
            return packet
        now = self.now
        buckets = self.buckets
        bucket = buckets.get(peer)
        packet_rate = self.packet_rate
        if bucket is None:
            if len(buckets) >= MAX_PEERS:
                buckets.popitem(last=False)
                self.evicted += 1
            bucket = buckets[peer] = _Bucket(self.burst, packet_rate or 0.0, now)
        else:
            buckets.move_to_end(peer)
            elapsed = now - bucket.stamp
            if elapsed > 0:
                bucket.bytes = min(self.burst, bucket.bytes + elapsed * self.rate)
                if packet_rate is not None:
                    bucket.packets = min(packet_rate, bucket.packets + elapsed * packet_rate)
                bucket.stamp = now
        size = len(packet.data)
        if bucket.bytes < size:
            self.limited += 1
            return DROP_BYTES
        if packet_rate is not None:
            if bucket.packets < 1:
                self.limited += 1
                return DROP_PACKETS
            bucket.packets -= 1
        bucket.bytes -= size
        self.passed += 1
        return packet

    def stats_extra(self) -> dict[str, Any]:
        return {
            "rate_peers": len(self.buckets),
            "rate_passed": self.passed,
            "rate_limited": self.limited,
            "rate_no_peer": self.no_peer,
            "rate_evicted": self.evicted,
        }
