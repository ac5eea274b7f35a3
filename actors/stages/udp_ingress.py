"""UDP ingress: drains the WireGuard socket in batches and hands them to the decrypt stage.

It blocks when the decrypt stage is full, so backpressure reaches the kernel's socket buffer,
which is where a UDP flood should be dropped: before any Python work is spent on it.
"""

from __future__ import annotations

import time
from typing import Any

from ..io.mmsg import MmsgReceiver
from ..io.udp import UdpSocket
from ..io.udp_gso import GroReceiver
from ..mailbox import Mailbox
from .base import BATCH_SIZE, Outlet, PipelineActor, Poll

__all__ = ["UdpIngress"]


class UdpIngress(PipelineActor):
    def __init__(
        self,
        mailbox: Mailbox,
        udp: UdpSocket,
        outlet: Outlet,
        batch_size: int = BATCH_SIZE,
        **supervised: Any,
    ) -> None:
        super().__init__(mailbox, **supervised)
        self.udp = udp
        self.outlet = outlet
        self.batch_size = batch_size
        self.receiver: MmsgReceiver | None = None

    def setup(self) -> None:
        # batched reads: a system call and a GIL hand-off per batch, not per packet (io.batching)
        self.receiver = self.udp.make_receiver()  # with UDP GRO where the kernel has it
        self.stats.extra["offloads"] = ",".join(f"{k}={v}" for k, v in self.udp.offloads.items())
        self.actor_ref.tell(Poll())

    def on_control(self, message: Any) -> Any:
        if isinstance(message, Poll):
            self.read_turn(self.udp.wait_readable, self._read)
            return None
        return super().on_control(message)

    def _read(self) -> None:
        if self.receiver is None:
            return
        batch = self.udp.read_batch(self.batch_size, self.stats.drops, self.receiver)
        arrival = time.monotonic()  # once per read: what stages see as the packets' arrival
        # a GRO receive may hold a whole run: messages stay batches of batch_size
        for start in range(0, len(batch), self.batch_size):
            chunk = tuple(batch[start : start + self.batch_size])
            self.begin_batch(len(chunk))
            self.stats.packets_in += len(chunk)
            size = sum(len(d) for d, _ in chunk)
            self.stats.bytes_in += size
            self.emit(self.outlet, chunk, size, arrival)
            self._in_flight = 0
        if isinstance(self.receiver, GroReceiver):
            self.stats.extra["udp_gro_receives"] = self.receiver.runs_received
            self.stats.extra["udp_gro_datagrams"] = self.receiver.runs_datagrams
