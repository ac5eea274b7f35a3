"""TUN reader: reads outbound packets from the TUN device in batches.

Packets above 1280 bytes (the interface MTU was raised, e.g. wg-quick's default of 1420) are
dropped and answered with an ICMP too-big, which travels back to the kernel via the TUN writer.

Like UDP ingress it blocks when the next stage is full: the kernel then queues (and, past the
device's txqueuelen, drops) instead of this process growing.
"""

from __future__ import annotations

from typing import Any

from ..io.batch import AioReader
from ..io.tun import TunDevice
from ..mailbox import Mailbox
from ..packet import Packet
from .base import BATCH_SIZE, POLL_INTERVAL, Outlet, PipelineActor, Poll

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

    def on_start(self) -> None:
        # batched reads: a system call and a GIL hand-off per batch, not per packet (io.batch)
        self.reader = AioReader(self.tun.fileno())
        self.actor_ref.tell(Poll())

    def on_stop(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def rewire(self, outlet: Outlet) -> None:
        self.outlet = outlet

    def on_control(self, message: Any) -> Any:
        if isinstance(message, Poll):
            if self.tun.wait_readable(POLL_INTERVAL):
                too_big: list[Packet] = []
                batch = self.tun.read_batch(self.batch_size, self.stats.drops, too_big, self.reader)
                if too_big and self.icmp_outlet is not None:
                    self.stats.extra["pmtu_replies"] = self.stats.extra.get(
                        "pmtu_replies", 0
                    ) + len(too_big)
                    self.emit(self.icmp_outlet, tuple(too_big), sum(len(p.data) for p in too_big))
                if batch:
                    self.begin_batch(len(batch))
                    self.stats.packets_in += len(batch)
                    size = sum(len(p.data) for p in batch)
                    self.stats.bytes_in += size
                    self.emit(self.outlet, tuple(batch), size)
                    self._in_flight = 0
            self.actor_ref.tell(Poll())
            return None
        return super().on_control(message)
