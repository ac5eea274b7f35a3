"""A stage that counts packets and bytes per flow and reports the top talkers.

Why: ``wgactors status`` shows how much a path carries; this shows who is talking. It passes
every packet on unchanged, so it can sit anywhere on either path::

    [[inbound]]
    use = "actors.contrib.flowstats:FlowStats"
    options = { top = 5, max_flows = 50000 }

A flow is (source, destination, protocol, source port, destination port); packets without ports
(ICMP, fragments) count under the addresses and protocol alone. The table is bounded by
``max_flows``, whatever the traffic: when it is full, the flow seen least recently is forgotten
to make room (and counted as evicted), so a scan of many short flows costs a fixed amount of
memory and leaves the busy long-lived flows in place.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections import OrderedDict
from typing import Any

from ..packet import Packet
from ..stage import Stage

__all__ = ["DEFAULT_MAX_FLOWS", "DEFAULT_TOP", "MAX_FLOWS", "MAX_TOP", "FlowStats"]

DEFAULT_TOP = 10
MAX_TOP = 1000
"""Most top talkers reported: ``stats_extra`` must stay small."""
DEFAULT_MAX_FLOWS = 10_000
MAX_FLOWS = 1_000_000
"""Largest flow table allowed: about 400 bytes per IPv4 flow, so some 400 MB at most."""

_PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite"}

# (source address bytes, destination address bytes, protocol, source port, destination port);
# the address length (4 or 16) tells the family apart.
FlowKey = tuple[bytes, bytes, int, int | None, int | None]


def _bounded_int(name: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low}..{high}, not {value}")
    return value


def format_flow(key: FlowKey) -> str:
    """``10.0.0.1:1234 -> 10.0.0.2:80 tcp``; IPv6 addresses in brackets when ports follow."""
    src_raw, dst_raw, proto, sport, dport = key
    src, dst = ipaddress.ip_address(src_raw), ipaddress.ip_address(dst_raw)
    name = _PROTOCOL_NAMES.get(proto, f"proto {proto}")
    if sport is None or dport is None:
        return f"{src} -> {dst} {name}"
    if src.version == 6:
        return f"[{src}]:{sport} -> [{dst}]:{dport} {name}"
    return f"{src}:{sport} -> {dst}:{dport} {name}"


class FlowStats(Stage):
    """Counts packets and bytes per flow in a table of at most ``max_flows`` flows.

    Options: ``top`` (default ``DEFAULT_TOP``, 1..``MAX_TOP``), how many flows ``stats_extra``
    lists, by bytes; ``max_flows`` (default ``DEFAULT_MAX_FLOWS``, 1..``MAX_FLOWS``), the table
    bound, beyond which the least recently seen flow is evicted.
    """

    def __init__(self, top: int = DEFAULT_TOP, max_flows: int = DEFAULT_MAX_FLOWS) -> None:
        super().__init__()
        self.top = _bounded_int("top", top, 1, MAX_TOP)
        self.max_flows = _bounded_int("max_flows", max_flows, 1, MAX_FLOWS)
        # Least recently seen first; each value is [packets, bytes], updated in place.
        self.flows: OrderedDict[FlowKey, list[int]] = OrderedDict()
        self.evicted = 0

    def _count(self, packet: Packet) -> None:
        key: FlowKey = (
            packet.src_bytes,
            packet.dst_bytes,
            packet.protocol,
            packet.src_port,
            packet.dst_port,
        )
        flows = self.flows
        counts = flows.get(key)
        if counts is None:
            if len(flows) >= self.max_flows:
                flows.popitem(last=False)
                self.evicted += 1
            flows[key] = [1, len(packet.data)]
        else:
            flows.move_to_end(key)
            counts[0] += 1
            counts[1] += len(packet.data)

    def process(self, packet: Packet) -> Packet:
        self._count(packet)
        return packet

    def process_batch(self, batch: tuple[Packet, ...]) -> list[Packet]:
        count = self._count
        for packet in batch:
            count(packet)
        return list(batch)

    def top_talkers(self) -> list[tuple[FlowKey, int, int]]:
        """The ``top`` flows by bytes, largest first: (key, packets, bytes)."""
        best = heapq.nlargest(self.top, self.flows.items(), key=lambda item: item[1][1])
        return [(key, packets, size) for key, (packets, size) in best]

    def stats_extra(self) -> dict[str, Any]:
        return {
            "flows": len(self.flows),
            "flows_evicted": self.evicted,
            "top_talkers": [
                {"flow": format_flow(key), "packets": packets, "bytes": size}
                for key, packets, size in self.top_talkers()
            ],
        }
