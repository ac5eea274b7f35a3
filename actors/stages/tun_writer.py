"""TUN writer: the only stage that writes to the TUN device.

Writing a packet to TUN costs a syscall (~4 us, without the GIL); on its own thread those
writes overlap with decryption instead of stalling it.
"""

from __future__ import annotations

from typing import Any

from ..io.tun import TunDevice
from ..io.tun_aio import AioWriter
from ..mailbox import Mailbox
from ..packet import Packet
from .base import PipelineActor

__all__ = ["TunWriter"]


class TunWriter(PipelineActor):
    def __init__(self, mailbox: Mailbox, tun: TunDevice, **supervised: Any) -> None:
        super().__init__(mailbox, **supervised)
        self.tun = tun
        self.writer: AioWriter | None = None

    def on_start(self) -> None:
        # One batch, one system call: see actors.io.batching for why this matters so much here.
        self.writer = AioWriter(self.tun.fileno())

    def on_stop(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def on_batch(self, batch: tuple[Any, ...]) -> None:
        assert self.writer is not None
        stats = self.stats
        extra = stats.extra
        datas = [p.data if isinstance(p, Packet) else p for p in batch]
        stats.packets_in += len(datas)
        stats.bytes_in += sum(len(d) for d in datas)
        # with GRO one buffer may carry a run of a TCP flow: counted as the packets it holds
        frames = self.tun.frames(datas)
        results = self.writer.write([f for f, _, _ in frames])
        for (_, count, nbytes), reason in zip(frames, results, strict=True):
            if reason is None:
                stats.packets_out += count
                stats.bytes_out += nbytes
                if count > 1:
                    extra["gro_frames"] = extra.get("gro_frames", 0) + 1
                    extra["gro_packets"] = extra.get("gro_packets", 0) + count
            else:
                stats.drops[reason] += count
