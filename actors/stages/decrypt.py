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
from typing import Any

from ..io.udp import UdpSocket
from ..mailbox import Mailbox
from ..snapshot import ConfigCell, DeviceConfig
from ..stats import StageSnapshot
from ..uapi import SetRequest
from ..wireguard.actions import Action, Deliver, HandshakeWanted, SendKeysUpdate, Sent, Transmit
from ..wireguard.device import Device
from .base import Outlet, PipelineActor
from .ticker import Tick

__all__ = ["Configure", "Decrypt", "GetDeviceState", "Resync", "apply_set"]


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
        device = Device(current.private_key, wall_offset=time.time() - time.monotonic())
        self.device = device
        now = time.monotonic()
        for peer in current.peers:
            self._dispatch(device.add_peer(peer, now))
            self.encrypt.tell(SendKeysUpdate(peer.public_key, None))

    def on_batch(self, batch: tuple[Any, ...]) -> None:
        assert self.device is not None
        stats = self.stats
        stats.packets_in += len(batch)
        stats.bytes_in += sum(len(d) for d, _ in batch)
        self._dispatch(self.device.receive_many(batch, time.monotonic()))

    def rewire(self, outlet: Outlet) -> None:
        self.outlet = outlet

    def on_control(self, message: Any) -> Any:
        device = self.device
        assert device is not None
        now = time.monotonic()
        if isinstance(message, Tick):
            self._dispatch(device.update_timers(now))
        elif isinstance(message, HandshakeWanted | Sent):
            self._dispatch(device.handle(message, now))
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
        delivered = []
        drops = self.stats.drops
        for action in actions:
            kind = type(action)
            if kind is Deliver:
                delivered.append(action.packet)
            elif kind is Transmit:
                reason = self.udp.send(action.data, action.endpoint)
                if reason is not None:
                    drops[reason] += 1
            else:
                self.encrypt.tell(action)
        if delivered:
            self.emit(self.outlet, tuple(delivered), sum(len(p.data) for p in delivered))

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


def apply_set(device: Device, request: SetRequest, now: float) -> list[Action]:
    """Apply a parsed `set=1` request to the device, in the order wireguard-go does."""
    out: list[Action] = []
    if request.private_key is not None:
        out += device.set_private_key(request.private_key)
    if request.replace_peers:
        out += device.remove_all_peers()
    for change in request.peers:
        if change.remove:
            out += device.remove_peer(change.public_key)
            continue
        out += device.update_peer(
            change.public_key,
            now,
            create=not change.update_only,
            preshared_key=change.preshared_key,
            endpoint=change.endpoint,
            persistent_keepalive=change.persistent_keepalive,
            replace_allowed_ips=change.replace_allowed_ips,
            allowed_ips=change.allowed_ips,
        )
    return out
