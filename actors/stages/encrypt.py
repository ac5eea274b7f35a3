"""WireGuard (encrypt): the stage that owns the send counters and sends on the UDP socket.

It owns the :class:`~actors.wireguard.encryptor.Encryptor`. Session keys, endpoints and routes
arrive from the decrypt stage as immutable control messages; what it sends, and the handshakes
it needs, go back the same way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from operator import attrgetter
from typing import Any

from ..io.effects import Transmitter
from ..io.udp import UdpSocket
from ..mailbox import Batch, Mailbox
from ..snapshot import ConfigCell
from ..wireguard.actions import (
    Action,
    DirectoryUpdate,
    HandshakeWanted,
    PeerEndpoint,
    PeerRemoved,
    RouteChanges,
    Routes,
    SendKeepalive,
    SendKeysUpdate,
    Sent,
    StagedDropped,
    TunnelReply,
)
from ..wireguard.allowedips import AllowedIPs
from ..wireguard.encryptor import Encryptor
from .base import PipelineActor
from .decrypt import DeviceActions, Resync

__all__ = ["Encrypt"]

_DATA = attrgetter("data")
_FROM_DEVICE = (
    DirectoryUpdate,
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
        sharded: bool = False,
        **supervised: Any,
    ) -> None:
        super().__init__(mailbox, **supervised)
        self.udp = udp
        self.decrypt = decrypt
        self.config = config
        # One of several workers: the TUN reader has handed on what other workers own, so
        # what still reaches here for one of their peers (a stage's own packet, a directory
        # that changed meanwhile) is dropped and counted, never handed on a second time.
        self.sharded = sharded
        self.encryptor = Encryptor()
        self.transmitter = Transmitter(udp)  # used by this stage's thread only

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

    def on_batch(self, batch: Batch) -> None:
        items = batch.items
        self.stats.packets_in += len(items)
        self.stats.bytes_in += sum(map(len, map(_DATA, items)))
        self._dispatch(self.encryptor.send_batch(items, time.monotonic(), handed_over=self.sharded))

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

    def setup(self) -> None:
        self._sync_from_config()

    def _dispatch(self, actions: list[Any]) -> None:
        stats = self.stats
        events: list[Action] = []
        try:
            # One sendmmsg per batch: one GIL hand-off instead of one per datagram.
            sent, nbytes = self.transmitter.carry_out(actions, stats.drops, [], events)
            stats.packets_out += sent
            stats.bytes_out += nbytes
        finally:
            # The timers and handshakes hear of it even if sending failed, and only after the
            # datagrams are out: a tell can wake that stage, and the packets on their way out
            # should not wait behind its bookkeeping.
            for event in events:
                if isinstance(event, HandshakeWanted | Sent):
                    self.decrypt.tell(event)

    def figures_beside(self) -> tuple[Mapping[str, int] | None, Mapping[str, Any] | None]:
        return self.encryptor.drops, self.transmitter.offload_counts()
