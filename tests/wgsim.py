"""An in-memory network for two protocol cores, driven by a fake clock.

Time only moves when the test moves it, and :meth:`Sim.advance` jumps straight from one timer
deadline to the next, so minutes of protocol time take milliseconds.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from actors import Packet
from actors.wireguard import Deliver, PeerConfig, Transmit, Tunnel
from actors.wireguard.crypto import public_key

A_EP = ("192.0.2.1", 51820)
B_EP = ("192.0.2.2", 51820)
A_TUN4, B_TUN4 = "10.9.0.1", "10.9.0.2"
A_TUN6, B_TUN6 = "fd09::1", "fd09::2"


def udp4(
    src: str, dst: str, payload: bytes = b"hello", sport: int = 1000, dport: int = 2000
) -> Packet:
    import ipaddress

    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        0,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return Packet(header + udp)


def udp6(src: str, dst: str, payload: bytes = b"hello6") -> Packet:
    import ipaddress

    udp = struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(udp),
        17,
        64,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return Packet(header + udp)


@dataclass
class Node:
    name: str
    tunnel: Tunnel
    endpoint: tuple[str, int]
    public: bytes
    delivered: list[Packet] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)


class Sim:
    """Two tunnels, A and B, on a network that can drop or tamper with datagrams."""

    def __init__(
        self,
        *,
        psk_a: bytes | None = None,
        psk_b: bytes | None = None,
        keepalive_a: int = 0,
        keepalive_b: int = 0,
        b_knows_a_endpoint: bool = True,
        seed: int = 1,
    ) -> None:
        rng = random.Random(seed)
        self.now = 1000.0
        ka, kb = rng.randbytes(32), rng.randbytes(32)
        pa, pb = public_key(ka), public_key(kb)
        self.a = Node(
            "A",
            Tunnel(
                ka,
                [PeerConfig(pb, psk_a, B_EP, (f"{B_TUN4}/32", f"{B_TUN6}/128"), keepalive_a)],
                now=self.now,
                rng=random.Random(seed + 1).randbytes,
            ),
            A_EP,
            pa,
        )
        self.b = Node(
            "B",
            Tunnel(
                kb,
                [
                    PeerConfig(
                        pa,
                        psk_b,
                        A_EP if b_knows_a_endpoint else None,
                        (f"{A_TUN4}/32", f"{A_TUN6}/128"),
                        keepalive_b,
                    )
                ],
                now=self.now,
                rng=random.Random(seed + 2).randbytes,
            ),
            B_EP,
            pb,
        )
        # UNIX time = monotonic time + this; a test may step it, as NTP steps a real clock.
        self.wall_offset = 1.7e9
        self.in_flight: list[tuple[Node, bytes, tuple[str, int]]] = []
        # filter(sender, datagram) -> datagram to deliver, or None to drop
        self.link: Callable[[Node, bytes], bytes | None] = lambda node, data: data
        self.log: list[tuple[str, bytes]] = []
        self.timed_log: list[tuple[float, str, bytes]] = []

    def wall(self) -> float:
        return self.now + self.wall_offset

    def other(self, node: Node) -> Node:
        return self.b if node is self.a else self.a

    def _collect(self, node: Node, actions: list[Transmit | Deliver]) -> None:
        for action in actions:
            if isinstance(action, Deliver):
                node.delivered.append(action.packet)
            else:
                node.sent.append(action.data)
                self.log.append((node.name, action.data))
                self.timed_log.append((self.now, node.name, action.data))
                self.in_flight.append((node, action.data, action.endpoint))

    def send(self, node: Node, packet: Packet) -> None:
        self._collect(node, node.tunnel.send(packet, self.now, self.wall()))

    def inject(self, to: Node, data: bytes, source: tuple[str, int]) -> None:
        """Deliver a datagram as if it came from ``source``."""
        self._collect(to, to.tunnel.receive(data, source, self.now, self.wall()))

    def flush(self, max_steps: int = 10_000) -> None:
        """Deliver everything in flight (and what that causes), at the current time."""
        for _ in range(max_steps):
            if not self.in_flight:
                return
            sender, data, endpoint = self.in_flight.pop(0)
            receiver = self.other(sender)
            if endpoint != receiver.endpoint:
                continue  # addressed to nobody we simulate
            filtered = self.link(sender, data)
            if filtered is not None:
                self._collect(
                    receiver,
                    receiver.tunnel.receive(filtered, sender.endpoint, self.now, self.wall()),
                )
        raise AssertionError("network did not settle")

    def tick(self) -> None:
        for node in (self.a, self.b):
            self._collect(node, node.tunnel.update_timers(self.now, self.wall()))
        self.flush()

    def advance(self, seconds: float, max_events: int = 100_000) -> None:
        """Move the clock forward, firing every timer at its deadline on the way."""
        end = self.now + seconds
        for _ in range(max_events):
            deadlines = [d for n in (self.a, self.b) if (d := n.tunnel.next_deadline()) is not None]
            nxt = min(deadlines, default=end)
            if nxt > end:
                break
            self.now = max(self.now, nxt)
            self.tick()
            if nxt >= end:
                break
        else:
            raise AssertionError("timers did not settle")
        self.now = end
        self.tick()

    def handshake(self) -> None:
        self.send(self.a, udp4(A_TUN4, B_TUN4, b"first"))
        self.flush()


def msg_type(data: bytes) -> int:
    return data[0]


def count_type(
    log: list[tuple[str, bytes]], sender: str, kind: int, size: int | None = None
) -> int:
    return sum(
        1
        for name, data in log
        if name == sender and data[0] == kind and (size is None or len(data) == size)
    )
