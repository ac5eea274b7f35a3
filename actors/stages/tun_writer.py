"""TUN writer: the only stage that writes to the TUN device.

This is the seed's point. Writing a packet to TUN costs a syscall (~4 us, without the GIL); on
its own thread those writes overlap with decryption instead of stalling it.
"""

from __future__ import annotations

from typing import Any

from ..io.tun import TunDevice
from ..mailbox import Mailbox
from ..packet import Packet
from .base import PipelineActor

__all__ = ["TunWriter"]


class TunWriter(PipelineActor):
    def __init__(self, mailbox: Mailbox, tun: TunDevice, **supervised: Any) -> None:
        super().__init__(mailbox, **supervised)
        self.tun = tun

    def on_batch(self, batch: tuple[Any, ...]) -> None:
        stats = self.stats
        write = self.tun.write
        drops = stats.drops
        for packet in batch:
            stats.packets_in += 1
            data = packet.data if isinstance(packet, Packet) else packet
            stats.bytes_in += len(data)
            reason = write(data)
            if reason is None:
                stats.packets_out += 1
                stats.bytes_out += len(data)
            else:
                drops[reason] += 1
