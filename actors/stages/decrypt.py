"""WireGuard (decrypt): the stage that owns the protocol's receive side.

It owns the :class:`~actors.wireguard.device.Device`: handshakes, receive keys, replay windows,
the timers and endpoint roaming. It decrypts batches of datagrams, answers handshakes on the
socket itself, passes decrypted packets on, and tells the encrypt stage about new sessions,
endpoints and routes through that stage's control lane, as immutable values.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

from ..io.udp import UdpSocket
from ..mailbox import Mailbox
from ..packet import Packet
from ..snapshot import ConfigCell, DeviceConfig
from ..stats import StageSnapshot
from ..uapi import SetRequest
from ..wireguard.actions import (
    Deliver,
    DeliverBatch,
    HandshakeWanted,
    SendKeysUpdate,
    Sent,
    Transmit,
)
from ..wireguard.apply import apply_set
from ..wireguard.device import Device
from .base import Outlet, PipelineActor
from .ticker import Tick

__all__ = ["Configure", "Decrypt", "GetDeviceState", "Resync"]

_FIRST = itemgetter(0)
_DATA = attrgetter("data")


@dataclass(frozen=True, slots=True)
class Configure:
    """A validated `wg set` request to apply (listen port and fwmark are the socket's)."""

    request: SetRequest


@dataclass(frozen=True, slots=True)
class GetDeviceState:
    """Ask for (private key, peer states): what `wg show` needs."""


@dataclass(frozen=True, slots=True)
class Resync:
    """A restarted encrypt stage asks for the routes and endpoints it lost."""


class Decrypt(PipelineActor):
    def __init__(
        self,
        mailbox: Mailbox,
        udp: UdpSocket,
        outlet: Outlet,
        encrypt: Mailbox,
        config: ConfigCell,
        **supervised: Any,
    ) -> None:
        super().__init__(mailbox, **supervised)
        self.udp = udp
        self.outlet = outlet
        self.encrypt = encrypt
        self.config = config
        self.device: Device | None = None

    def on_start(self) -> None:
        # A new incarnation starts from the configuration, with no sessions: the encrypt stage
        # must forget keys whose receive half died with the previous incarnation, and the next
        # packet it has to send starts a fresh handshake.
        current = self.config.get()
        device = Device(current.private_key)
        self.device = device
        now = time.monotonic()
        for peer in current.peers:
            self._dispatch(device.add_peer(peer, now))
            self.encrypt.tell(SendKeysUpdate(peer.public_key, None))

    def on_batch(self, batch: tuple[Any, ...]) -> None:
        assert self.device is not None
        stats = self.stats
        stats.packets_in += len(batch)
        stats.bytes_in += sum(map(len, map(_FIRST, batch)))
        self._dispatch(self.device.receive_batch(batch, time.monotonic(), time.time()))

    def on_control(self, message: Any) -> Any:
        device = self.device
        assert device is not None
        now, wall = time.monotonic(), time.time()
        if isinstance(message, Tick):
            self._dispatch(device.update_timers(now, wall))
        elif isinstance(message, HandshakeWanted | Sent):
            self._dispatch(device.handle(message, now, wall))
        elif isinstance(message, Configure):
            self._dispatch(apply_set(device, message.request, now))
            self.config.publish(DeviceConfig(device.private_key, device.configs()))
        elif isinstance(message, GetDeviceState):
            return device.private_key, tuple(device.peer_states())
        elif isinstance(message, Resync):
            self._dispatch(device.sync_actions())
        else:
            return super().on_control(message)
        return None

    def _dispatch(self, actions: list[Any]) -> None:
        delivered: list[Packet] = []
        drops = self.stats.drops
        for action in actions:
            kind = type(action)
            if kind is DeliverBatch:
                delivered += action.packets
            elif kind is Deliver:
                delivered.append(action.packet)
            elif kind is Transmit:
                reason = self.udp.send(action.data, action.endpoint)
                if reason is not None:
                    drops[reason] += 1
            else:
                self.encrypt.tell(action)
        if delivered:
            self.emit(self.outlet, tuple(delivered), sum(map(len, map(_DATA, delivered))))

    def snapshot(self) -> StageSnapshot:
        drops = Counter(self.stats.drops)
        if self.device is not None:
            drops.update(self.device.drops)
            self.stats.extra["events"] = dict(self.device.events)
        saved = self.stats.drops
        self.stats.drops = drops
        try:
            return super().snapshot()
        finally:
            self.stats.drops = saved
