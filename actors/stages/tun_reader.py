"""TUN reader: reads outbound packets from the TUN device in batches.

Packets above 1280 bytes (the interface MTU was raised, e.g. wg-quick's default of 1420) are
fragmented (IPv4 without DF) or dropped and answered with an ICMP too-big, which travels back
to the kernel via the TUN writer (see :mod:`actors.io.tun`).

Like UDP ingress it blocks when the next stage is full: the kernel then queues (and, past the
device's txqueuelen, drops) instead of this process growing.
"""

from __future__ import annotations

import select
import time
from collections import Counter
from typing import Any

from ..io.handover import HandOverReceiver, HandOverSender
from ..io.tun import TunDevice
from ..io.tun_aio import AioReader
from ..mailbox import Mailbox
from ..packet import Packet
from ..workers.shard import HandedOver, Shard, split_by_owner
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
        shard: Shard | None = None,
        decrypt: Mailbox | None = None,
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
        # One of several workers: host packets for the others' peers are handed to them here,
        # before any custom stage, so a stage sees all of one peer's packets in one place; and
        # what they hand here (host packets, and initiations for the decrypt stage) is read
        # here too, before this queue's own packets.
        self.shard = shard
        self.decrypt = decrypt
        self.inbox: HandOverReceiver | None = None
        self.doors: HandOverSender | None = None
        self._poll: select.poll | None = None
        self._owners: dict[bytes, int | None] = {}  # destination -> worker, for _directory
        self._directory: object = None

    def setup(self) -> None:
        # batched reads: a system call and a GIL hand-off per batch, not per packet (io.batching)
        self.reader = self.tun.make_reader()
        self.stats.extra["offloads"] = ",".join(f"{k}={v}" for k, v in self.tun.offloads.items())
        if self.shard is not None:
            self.inbox = HandOverReceiver(self.shard.inbox)
            self.doors = HandOverSender(self.shard.doors)
            self._poll = select.poll()
            for fd in (self.tun.fileno(), self.inbox.fileno()):
                self._poll.register(fd, select.POLLIN)
        self.actor_ref.tell(Poll())

    def teardown(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def rewire(self, outlet: Outlet) -> None:
        self.outlet = outlet

    def on_control(self, message: Any) -> Any:
        if isinstance(message, Poll):
            self.read_turn(self.tun.wait_readable if self._poll is None else self._wait, self._read)
            return None
        return super().on_control(message)

    def _wait(self, timeout: float) -> bool:
        assert self._poll is not None
        return bool(self._poll.poll(timeout * 1000))

    def _read(self) -> None:
        if self.reader is None:
            return
        if self.inbox is not None:
            self._read_inbox(self.inbox)
        too_big: list[Packet] = []
        batch = self.tun.read_batch(
            self.reader.max_batch, self.stats.drops, too_big, self.reader, self.offload
        )
        arrival = time.monotonic()  # once per read: what stages see as the packets' arrival
        if self.offload:
            self.stats.extra.update(self.offload)
        if too_big and self.icmp_outlet is not None:
            self.stats.tally("pmtu_replies", len(too_big))
            self.emit(self.icmp_outlet, tuple(too_big), sum(len(p.data) for p in too_big), arrival)
        if self.shard is not None and batch:
            batch = self._hand_over(self.shard, batch)
        self._emit_chunks(batch, arrival)

    def _emit_chunks(self, batch: list[Packet], arrival: float) -> None:
        # a TSO read may hold dozens of packets: messages stay batches of batch_size
        for start in range(0, len(batch), self.batch_size):
            chunk = tuple(batch[start : start + self.batch_size])
            self.begin_batch(len(chunk))
            self.stats.packets_in += len(chunk)
            size = sum(len(p.data) for p in chunk)
            self.stats.bytes_in += size
            self.emit(self.outlet, chunk, size, arrival)
            self._in_flight = 0

    def _read_inbox(self, inbox: HandOverReceiver) -> None:
        """What other workers handed here: their initiations for the decrypt stage, and host
        packets for our peers, which go down our own outbound path."""
        arrivals = inbox.receive()
        # never wait for the decrypt stage here: the host's packets would wait too
        datagrams = arrivals.datagrams
        if (
            datagrams
            and self.decrypt is not None
            and not self.decrypt.tell(HandedOver(tuple(datagrams)), timeout=0)
        ):
            self.stats.drops["handover_decrypt_full"] += len(datagrams)
        if arrivals.packets:
            self.stats.tally("handed_over_in", len(arrivals.packets))
            self._emit_chunks(arrivals.packets, time.monotonic())
        self.stats.take_drops(inbox.drops)

    def _hand_over(self, shard: Shard, batch: list[Packet]) -> list[Packet]:
        """Hand the packets of other workers' peers to them; ours, in order."""
        directory = shard.directory.get()
        if directory is None:
            return batch
        if directory is not self._directory:
            self._directory, self._owners = directory, {}
        mine, theirs = split_by_owner(batch, directory, shard.worker, self._owners)
        if theirs:
            doors = self.doors
            assert doors is not None
            for owner, packets in theirs.items():
                doors.packets(owner, packets)
            self.flush_handover(doors)
        return mine
