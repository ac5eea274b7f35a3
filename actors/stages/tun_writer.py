"""TUN writer: the only stage that writes to the TUN device.

Writing a packet to TUN costs a system call (~4 us, without the GIL); on a thread of their own
those writes overlap with decryption instead of stalling it (connlib found 26% of its one
loop's time in them).
"""

from __future__ import annotations

from typing import Any

from ..io.effects import TunDelivery
from ..io.tun import TunDevice
from ..mailbox import Batch, Mailbox
from ..packet import Packet
from .base import PipelineActor

__all__ = ["TunWriter"]


class TunWriter(PipelineActor):
    def __init__(self, mailbox: Mailbox, tun: TunDevice, **supervised: Any) -> None:
        super().__init__(mailbox, **supervised)
        self.tun = tun
        self.writer: TunDelivery | None = None

    def setup(self) -> None:
        # One batch, one system call: see actors.io.batching for why this matters so much here.
        self.writer = TunDelivery(self.tun)

    def teardown(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def on_batch(self, batch: Batch) -> None:
        assert self.writer is not None
        stats = self.stats
        datas = [p.data if isinstance(p, Packet) else p for p in batch.items]
        stats.packets_in += len(datas)
        stats.bytes_in += sum(len(d) for d in datas)
        packets, nbytes = self.writer.write(datas, stats.drops, stats.extra)
        stats.packets_out += packets
        stats.bytes_out += nbytes
