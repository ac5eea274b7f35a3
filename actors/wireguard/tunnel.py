"""Both halves of the core wired together in one object, with no threads.

The actor pipeline puts :class:`~.device.Device` and :class:`~.encryptor.Encryptor` on separate
threads and carries their internal actions as messages. :class:`Tunnel` does the same routing by
direct calls, which is what the single-threaded mode, the interop tests and the in-memory tests
need. Its methods return only external actions: :class:`Transmit` and :class:`Deliver`, and
with ``receive_batch``/``send_batch`` also their batch forms (one per run of packets).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Literal, overload

from ..packet import Packet
from .actions import (
    Action,
    Deliver,
    DeliverBatch,
    Endpoint,
    HandshakeWanted,
    Sent,
    Transmit,
    TransmitBatch,
)
from .device import Device, PeerConfig
from .encryptor import Encryptor
from .transport import expand

__all__ = ["Tunnel"]

# Internal actions cascade (a new session flushes packets, which report Sent...) but every chain
# is short; this bound turns a bug into an error instead of a hang.
_MAX_PUMP_STEPS = 100_000


class Tunnel:
    def __init__(
        self,
        private_key: bytes | None,
        peers: Iterable[PeerConfig] = (),
        *,
        now: float = 0.0,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.device = Device(private_key, rng=rng)
        self.encryptor = Encryptor()
        for peer in peers:
            self.add_peer(peer, now)

    def add_peer(self, config: PeerConfig, now: float) -> list[Transmit | Deliver]:
        return self._pump(self.device.add_peer(config, now), now, None)

    def remove_peer(self, key: bytes, now: float) -> list[Transmit | Deliver]:
        return self._pump(self.device.remove_peer(key), now, None)

    def receive(
        self, data: bytes, source: Endpoint, now: float, wall: float
    ) -> list[Transmit | Deliver]:
        """``now`` is monotonic seconds and ``wall`` UNIX seconds, here and below: every entry
        point may lead to a handshake initiation, which carries the wall time."""
        return self._pump(self.device.receive(data, source, now, wall), now, wall)

    def receive_many(
        self, datagrams: Iterable[tuple[bytes, Endpoint]], now: float, wall: float
    ) -> list[Transmit | Deliver]:
        return self._pump(self.device.receive_many(datagrams, now, wall), now, wall)

    def receive_batch(
        self, datagrams: Iterable[tuple[bytes, Endpoint]], now: float, wall: float
    ) -> list[Transmit | Deliver | TransmitBatch | DeliverBatch]:
        """As :meth:`receive_many`, with each run of packets as one batch action."""
        return self._pump(self.device.receive_batch(datagrams, now, wall), now, wall, batches=True)

    def send_batch(
        self, packets: Iterable[Packet], now: float, wall: float
    ) -> list[Transmit | Deliver | TransmitBatch | DeliverBatch]:
        """As :meth:`send_many`, with each run of packets as one batch action."""
        return self._pump(self.encryptor.send_batch(packets, now), now, wall, batches=True)

    def send(self, packet: Packet, now: float, wall: float) -> list[Transmit | Deliver]:
        return self._pump(self.encryptor.send(packet, now), now, wall)

    def send_many(
        self, packets: Iterable[Packet], now: float, wall: float
    ) -> list[Transmit | Deliver]:
        return self._pump(self.encryptor.send_many(packets, now), now, wall)

    def apply(
        self, change: Callable[[Device], list[Action]], now: float, wall: float
    ) -> list[Transmit | Deliver]:
        """Run a configuration change on the device and route what it causes."""
        return self._pump(change(self.device), now, wall)

    def update_timers(self, now: float, wall: float) -> list[Transmit | Deliver]:
        return self._pump(self.device.update_timers(now, wall), now, wall)

    def next_deadline(self) -> float | None:
        return self.device.next_deadline()

    @overload
    def _pump(
        self,
        actions: list[Action],
        now: float,
        wall: float | None,
        *,
        batches: Literal[False] = ...,
    ) -> list[Transmit | Deliver]: ...

    @overload
    def _pump(
        self, actions: list[Action], now: float, wall: float | None, *, batches: Literal[True]
    ) -> list[Transmit | Deliver | TransmitBatch | DeliverBatch]: ...

    def _pump(
        self, actions: list[Action], now: float, wall: float | None, *, batches: bool = False
    ) -> list[Any]:
        """Route internal actions until none is left; the external ones are the result, with
        batch actions kept as they are if ``batches``, else one action per packet. ``wall`` is
        None only for adding and removing peers, which never make the device send."""
        out: list[Any] = []
        queue = deque(actions)
        batched = False
        for _ in range(_MAX_PUMP_STEPS):
            if not queue:
                return expand(out) if batched and not batches else out
            action = queue.popleft()
            kind = type(action)
            if kind is Transmit or kind is Deliver:
                out.append(action)
            elif kind is TransmitBatch or kind is DeliverBatch:
                out.append(action)
                batched = True
            elif isinstance(action, HandshakeWanted | Sent):
                if wall is None:
                    raise RuntimeError(f"{type(action).__name__} without the wall time")
                queue.extend(self.device.handle(action, now, wall))
            else:
                queue.extend(self.encryptor.handle(action, now))
        raise RuntimeError("internal action loop did not settle")
