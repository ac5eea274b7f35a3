"""WireGuard (encrypt): the stage that owns the send counters and sends on the UDP socket.

It owns the :class:`~actors.wireguard.encryptor.Encryptor`. Session keys, endpoints and routes
arrive from the decrypt stage as immutable control messages; what it sends, and the handshakes
it needs, go back the same way.
"""

from __future__ import annotations

import time
from collections import Counter
from itertools import repeat
from operator import attrgetter
from typing import Any

from ..io.mmsg import MmsgSender
from ..io.udp import UdpSocket
from ..io.udp_gso import GsoSender
from ..mailbox import Mailbox
from ..snapshot import ConfigCell
from ..stats import StageSnapshot
from ..wireguard.actions import (
    HandshakeWanted,
    PeerEndpoint,
    PeerRemoved,
    RouteChanges,
    Routes,
    SendKeepalive,
    SendKeysUpdate,
    Sent,
    StagedDropped,
    Transmit,
    TransmitBatch,
    TunnelReply,
)
from ..wireguard.allowedips import AllowedIPs
from ..wireguard.encryptor import Encryptor
from .base import PipelineActor
from .decrypt import DeviceActions, Resync

__all__ = ["Encrypt"]

_DATA = attrgetter("data")
_FROM_DEVICE = (
    SendKeysUpdate,
    PeerEndpoint,
    SendKeepalive,
    StagedDropped,
    Routes,
    RouteChanges,
    PeerRemoved,
    TunnelReply,
)


class Encrypt(PipelineActor):
    def __init__(
        self,
        mailbox: Mailbox,
        udp: UdpSocket,
        decrypt: Mailbox,
        config: ConfigCell,
        **supervised: Any,
    ) -> None:
        super().__init__(mailbox, **supervised)
        self.udp = udp
        self.decrypt = decrypt
        self.config = config
        self.encryptor = Encryptor()
        self.sender: MmsgSender

    def _sync_from_config(self) -> None:
        # Routes and endpoints straight from the configuration, so that no packet meets an empty
        # table at start-up; then ask the decrypt stage for the current state, which is newer
        # if this is a restart. Keys never come back: their counters died with us, and reusing
        # a key with a reset counter would be a replay. A new handshake follows on demand.
        now = time.monotonic()
        routes: AllowedIPs[bytes] = AllowedIPs(index=False)
        for peer in self.config.get().peers:
            for net in peer.allowed_ips:
                routes.insert(net, peer.public_key)
            self.encryptor.handle(PeerEndpoint(peer.public_key, peer.endpoint), now)
        self.encryptor.handle(Routes(routes), now)
        self.decrypt.tell(Resync())

    def on_batch(self, batch: tuple[Any, ...]) -> None:
        self.stats.packets_in += len(batch)
        self.stats.bytes_in += sum(map(len, map(_DATA, batch)))
        self._dispatch(self.encryptor.send_batch(batch, time.monotonic()))

    def on_control(self, message: Any) -> Any:
        if isinstance(message, _FROM_DEVICE):
            self._dispatch(self.encryptor.handle(message, time.monotonic()))
            return None
        if isinstance(message, DeviceActions):
            now = time.monotonic()
            handle = self.encryptor.handle
            out: list[Any] = []
            for action in message.actions:
                out += handle(action, now)
            self._dispatch(out)
            return None
        return super().on_control(message)

    def on_start(self) -> None:
        self.sender = self.udp.make_sender()  # with UDP GSO where the kernel has it
        self._sync_from_config()

    def _dispatch(self, actions: list[Any]) -> None:
        stats = self.stats
        sender = self.sender
        host = self.udp.kernel_host
        datagrams: list[tuple[bytes, bytes]] = []
        # Told to the decrypt stage after the datagrams are sent, not before: a tell can wake
        # that stage, and the packet on its way out should not wait behind its bookkeeping.
        to_decrypt: list[Any] = []
        for action in actions:
            kind = type(action)
            if kind is TransmitBatch or kind is Transmit:
                (h, port) = action.endpoint
                try:
                    addr = sender.sendable(host(h), port)
                except (OSError, ValueError):
                    count = len(action.datagrams) if kind is TransmitBatch else 1
                    stats.drops["bad_endpoint"] += count
                    continue
                if kind is TransmitBatch:
                    datagrams += zip(action.datagrams, repeat(addr))
                else:
                    datagrams.append((action.data, addr))
            elif kind is HandshakeWanted or kind is Sent:
                to_decrypt.append(action)
        try:
            if datagrams:
                # One sendmmsg per batch: one GIL hand-off instead of one per datagram.
                before = sender.bytes_sent
                stats.packets_out += sender.send(datagrams, stats.drops)
                stats.bytes_out += sender.bytes_sent - before
                if isinstance(sender, GsoSender):
                    stats.extra["udp_gso_sends"] = sender.runs_sent
                    stats.extra["udp_gso_datagrams"] = sender.runs_datagrams
        finally:  # the timers and handshakes hear of it even if sending failed
            for action in to_decrypt:
                self.decrypt.tell(action)

    def snapshot(self) -> StageSnapshot:
        saved = self.stats.drops
        self.stats.drops = saved + Counter(self.encryptor.drops)
        try:
            return super().snapshot()
        finally:
            self.stats.drops = saved
