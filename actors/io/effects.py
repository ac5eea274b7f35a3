"""Effects: the one place where the protocol core's actions become system calls.

The core (:mod:`actors.wireguard`) answers every input with actions: datagrams to transmit,
packets to deliver to the host, and events for its other half. Every data plane (the actor
pipeline's stages, the single-threaded loop, and any later one) carries them out through the
two classes here, so that batching, address caching and the accounting of what could not be
sent are written once:

- :class:`Transmitter` sends a batch's datagrams with one batched ``sendmmsg`` (or UDP GSO run),
  counting a datagram whose endpoint the socket cannot reach as ``bad_endpoint``, and hands
  back what is not a datagram: packets for the host, in order, and events, in order.
- :class:`TunDelivery` writes packets to the TUN device with one batched AIO submission (and,
  with GRO, one buffer per run of a TCP flow), counting what the kernel refused.

Each owns buffers that the kernel reads during a call, so each is owned by one thread. Counters
belong to the caller and are passed in on every call: these objects keep none of their own
beyond the offload tallies that ``status`` shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, MutableMapping
from itertools import repeat

from ..packet import Packet
from ..wireguard.actions import Action, Deliver, DeliverBatch, Transmit, TransmitBatch
from .mmsg import MmsgSender
from .tun import TunDevice
from .tun_aio import AioWriter
from .udp import UdpSocket
from .udp_gso import GsoSender

__all__ = ["BAD_ENDPOINT", "Transmitter", "TunDelivery"]

BAD_ENDPOINT = "bad_endpoint"  # drop reason: an endpoint this socket cannot send to


class Transmitter:
    """Sends the datagrams among a batch of actions, one batched system call per batch."""

    __slots__ = ("_host", "_sender")

    def __init__(self, udp: UdpSocket) -> None:
        self._host = udp.kernel_host
        self._sender: MmsgSender = udp.make_sender()  # with UDP GSO where the kernel has it

    def carry_out(
        self,
        actions: Iterable[Action],
        drops: Counter[str],
        delivered: list[Packet],
        events: list[Action],
    ) -> tuple[int, int]:
        """Send every datagram in ``actions``; append the packets for the host to
        ``delivered`` and every other action to ``events``, each in order. Returns the
        datagrams and bytes that went out; what did not is counted in ``drops``."""
        sendable = self._sender.sendable
        host = self._host
        datagrams: list[tuple[bytes, bytes]] = []
        for action in actions:
            # Exact types, not isinstance: this runs for every batch on the hot path.
            if type(action) is TransmitBatch:
                try:
                    addr = sendable(host(action.endpoint[0]), action.endpoint[1])
                except (OSError, ValueError):
                    drops[BAD_ENDPOINT] += len(action.datagrams)
                    continue
                datagrams += zip(action.datagrams, repeat(addr))
            elif type(action) is Transmit:
                try:
                    addr = sendable(host(action.endpoint[0]), action.endpoint[1])
                except (OSError, ValueError):
                    drops[BAD_ENDPOINT] += 1
                    continue
                datagrams.append((action.data, addr))
            elif type(action) is DeliverBatch:
                delivered += action.packets
            elif type(action) is Deliver:
                delivered.append(action.packet)
            else:
                events.append(action)
        if not datagrams:
            return 0, 0
        sender = self._sender
        before = sender.bytes_sent
        sent = sender.send(datagrams, drops)
        return sent, sender.bytes_sent - before

    def offload_counts(self) -> dict[str, int]:
        """What UDP GSO has done so far (nothing without it), for ``status``."""
        sender = self._sender
        if not isinstance(sender, GsoSender):
            return {}
        return {"udp_gso_sends": sender.runs_sent, "udp_gso_datagrams": sender.runs_datagrams}


class TunDelivery:
    """Writes packets for the host to the TUN device, one batched submission per batch."""

    __slots__ = ("_frames", "_writer")

    def __init__(self, tun: TunDevice) -> None:
        self._frames = tun.frames
        self._writer = AioWriter(tun.fileno())

    def write(
        self, datas: list[bytes], drops: Counter[str], extra: MutableMapping[str, int]
    ) -> tuple[int, int]:
        """Write the packets ``datas``; returns the packets and bytes the kernel took. What it
        refused is counted in ``drops`` by reason; GRO runs in ``extra`` (``gro_frames``, and
        ``gro_packets`` they held)."""
        # With GRO one buffer may carry a run of one TCP flow: counted as the packets it holds.
        frames = self._frames(datas)
        results = self._writer.write([f for f, _, _ in frames])
        packets = nbytes = 0
        for (_, count, size), reason in zip(frames, results, strict=True):
            if reason is None:
                packets += count
                nbytes += size
                if count > 1:
                    extra["gro_frames"] = extra.get("gro_frames", 0) + 1
                    extra["gro_packets"] = extra.get("gro_packets", 0) + count
            else:
                drops[reason] += count
        return packets, nbytes

    def close(self) -> None:
        self._writer.close()
