"""A user's stage for the live tests, loaded by file path (no PYTHONPATH): it answers pings
itself, using the peer identity of the inbound packet and the way back."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from actors import CONSUMED, Packet, Stage, build


class AnswerPings(Stage):
    """Answers echo requests to ``address`` from the peer ``peer`` (base64 public key) and
    consumes them, so the host never sees them; passes everything else."""

    def __init__(self, address: str, peer: str) -> None:
        super().__init__()
        self.address = ipaddress.ip_address(address).packed
        self.peer = base64.b64decode(peer)
        self.answered = 0
        self.strangers = 0
        self.routed_back = 0  # answers whose destination routes to the asking peer

    def process(self, packet: Packet) -> Packet | object:
        if packet.dst_bytes != self.address or packet.icmp_type not in (8, 128):
            return packet
        if packet.peer != self.peer:
            self.strangers += 1
            return packet
        reply = build.echo_reply(packet)
        if reply is None:
            return packet
        if self.peer_for(reply.dst) == packet.peer:
            self.routed_back += 1
        self.reply(reply)
        self.answered += 1
        return CONSUMED  # answered, not dropped

    def stats_extra(self) -> dict[str, Any]:
        return {
            "pings_answered": self.answered,
            "pings_from_strangers": self.strangers,
            "pings_routed_back": self.routed_back,
        }


class CountTicks(Stage):
    """Passes everything; counts its ticks (every 0.1 s) and the packets it saw."""

    tick_interval = 0.1

    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0

    def on_tick(self, now: float) -> None:
        self.ticks += 1

    def stats_extra(self) -> dict[str, Any]:
        return {"ticks": self.ticks}
