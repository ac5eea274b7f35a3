"""TUN reader: reads outbound packets from the TUN device in batches.

Packets above 1280 bytes (the interface MTU was raised, e.g. wg-quick's default of 1420) are
fragmented (IPv4 without DF) or dropped and answered with an ICMP too-big, which travels back
to the kernel via the TUN writer (see :mod:`actors.io.tun`).

Like UDP ingress it blocks when the next stage is full: the kernel then queues (and, past the
device's txqueuelen, drops) instead of this process growing.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from ..io.tun import TunDevice
from ..io.tun_aio import AioReader
from ..mailbox import Mailbox
from ..packet import Packet
from .base import BATCH_SIZE, Outlet, PipelineActor, Poll

__all__ = ["TunReader"]


class TunReader(PipelineActor):
    def __init__(
        self,
        mailbox: Mailbox,
        tun: TunDevice,
        outlet: Outlet,
        batch_size: int = BATCH_SIZE,
        icmp_outlet: Outlet | None = None,
        **supervised: Any,
    ) -> None:
        super().__init__(mailbox, **supervised)
        self.tun = tun
        self.outlet = outlet
        self.batch_size = batch_size
        # ICMP too-big answers go back to the kernel through the TUN writer, its one writer
        self.icmp_outlet = icmp_outlet
        self.reader: AioReader | None = None
        self.offload: Counter[str] = Counter()  # GSO frames split, and what they held

    def setup(self) -> None:
        # batched reads: a system call and a GIL hand-off per batch, not per packet (io.batching)
        self.reader = self.tun.make_reader()
        self.stats.extra["offloads"] = ",".join(f"{k}={v}" for k, v in self.tun.offloads.items())
        self.actor_ref.tell(Poll())

    def teardown(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def rewire(self, outlet: Outlet) -> None:
        self.outlet = outlet

    def on_control(self, message: Any) -> Any:
        if isinstance(message, Poll):
            self.read_turn(self.tun.wait_readable, self._read)
            return None
        return super().on_control(message)

    def _read(self) -> None:
        if self.reader is None:
            return
        too_big: list[Packet] = []
        batch = self.tun.read_batch(
            self.reader.max_batch, self.stats.drops, too_big, self.reader, self.offload
        )
        arrival = time.monotonic()  # once per read: what stages see as the packets' arrival
        if self.offload:
            self.stats.extra.update(self.offload)
        if too_big and self.icmp_outlet is not None:
            self.stats.extra["pmtu_replies"] = self.stats.extra.get("pmtu_replies", 0) + len(
                too_big
            )
            self.emit(self.icmp_outlet, tuple(too_big), sum(len(p.data) for p in too_big), arrival)
        # a TSO read may hold dozens of packets: messages stay batches of batch_size
        for start in range(0, len(batch), self.batch_size):
            chunk = tuple(batch[start : start + self.batch_size])
            self.begin_batch(len(chunk))
            self.stats.packets_in += len(chunk)
            size = sum(len(p.data) for p in chunk)
            self.stats.bytes_in += size
            self.emit(self.outlet, chunk, size, arrival)
            self._in_flight = 0
