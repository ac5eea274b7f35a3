"""WireGuard (decrypt): the stage that owns the protocol's receive side.

It owns the :class:`~actors.wireguard.device.Device`: handshakes, receive keys, replay windows,
the timers and endpoint roaming. It decrypts batches of datagrams, answers handshakes on the
socket itself, passes decrypted packets on, and tells the encrypt stage about new sessions,
endpoints and routes through that stage's control lane, as immutable values.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

from ..gcpause import gc_paused, settle_after
from ..io.effects import Transmitter
from ..io.handover import HandOverSender
from ..io.udp import UdpSocket
from ..mailbox import Batch, Mailbox
from ..packet import Packet
from ..snapshot import ConfigCell, ConfigTracker
from ..uapi import SetRequest
from ..wireguard.actions import (
    Action,
    HandOverDatagram,
    HandshakeWanted,
    PeerEndpoint,
    PeerRemoved,
    SendKeysUpdate,
    Sent,
)
from ..wireguard.allowedips import RouteChanges
from ..wireguard.apply import apply_set
from ..wireguard.device import Device
from ..workers.shard import HandedOver, SetDirectory, Shard, TakeEndpoints
from .base import Outlet, PipelineActor
from .ticker import Tick

__all__ = ["Configure", "Decrypt", "DeviceActions", "GetDeviceState", "Resync"]

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


@dataclass(frozen=True, slots=True)
class DeviceActions:
    """Several actions for the encrypt stage in one message, in order.

    Loading 100,000 peers makes 300,000 actions for the encrypt side; one message per action
    would cost a mailbox hand-off each (and block on the control lane's bound). A batch costs
    one, and its route changes travel merged into one value.
    """

    actions: tuple[Action, ...]


class Decrypt(PipelineActor):
    def __init__(
        self,
        mailbox: Mailbox,
        udp: UdpSocket,
        outlet: Outlet,
        encrypt: Mailbox,
        config: ConfigCell,
        shard: Shard | None = None,
        **supervised: Any,
    ) -> None:
        super().__init__(mailbox, **supervised)
        self.udp = udp
        self.outlet = outlet
        self.encrypt = encrypt
        self.config = config
        self.shard = shard
        self.device: Device | None = None
        # Handshake replies and cookie replies leave from here, batched like the data path.
        self.transmitter = Transmitter(udp)
        self.tracker = ConfigTracker(config.get())
        # initiations from peers another worker owns go there (worker processes only)
        self.doors = HandOverSender(shard.doors) if shard is not None else None
        # where peers moved since the parent last asked (worker processes only; one entry
        # per peer at most)
        self.moved: dict[bytes, Any] = {}

    def setup(self) -> None:
        # A new incarnation starts from the configuration, with no sessions: the encrypt stage
        # must forget keys whose receive half died with the previous incarnation, and the next
        # packet it has to send starts a fresh handshake.
        current = self.config.get()
        shard = self.shard
        device = Device(current.private_key, shard=shard.number if shard else (0, 1))
        self.device = device
        self.tracker = ConfigTracker(current)
        now = time.monotonic()
        actions: list[Action] = []
        if shard is not None:
            actions += device.set_directory(shard.directory.get())
        with gc_paused():
            for peer in current.peers:
                actions += device.add_peer(peer, now)
                actions.append(SendKeysUpdate(peer.public_key, None))
            self._dispatch(actions)
        settle_after(len(current.peers))

    def on_batch(self, batch: Batch) -> None:
        assert self.device is not None
        stats = self.stats
        items = batch.items
        stats.packets_in += len(items)
        stats.bytes_in += sum(map(len, map(_FIRST, items)))
        actions = self.device.receive_batch(items, time.monotonic(), time.time())
        self._dispatch(actions, batch.arrival)

    def rewire(self, outlet: Outlet) -> None:
        self.outlet = outlet

    def on_control(self, message: Any) -> Any:
        device = self.device
        assert device is not None
        now, wall = time.monotonic(), time.time()
        if isinstance(message, Tick):
            self._dispatch(device.update_timers(now, wall))
        elif isinstance(message, HandshakeWanted | Sent):
            self._dispatch(device.handle(message, now, wall))
        elif isinstance(message, HandedOver):
            self.stats.tally("handed_over_in", len(message.datagrams))
            self._dispatch(device.receive_handed_over(message.datagrams, now, wall))
        elif isinstance(message, SetDirectory):
            self._dispatch(device.set_directory(message.directory))
        elif isinstance(message, TakeEndpoints):
            moved, self.moved = self.moved, {}
            return moved
        elif isinstance(message, Configure):
            # The peers this request names; those it removes or robs of a prefix, and those
            # a new private key drops, are marked by the actions that say so (_dispatch).
            request = message.request
            self.tracker.mark(change.public_key for change in request.peers)
            self._dispatch(apply_set(device, request, now))
            self.config.publish(self.tracker.build(device))
        elif isinstance(message, GetDeviceState):
            return device.private_key, tuple(device.peer_states())
        elif isinstance(message, Resync):
            self._dispatch(device.sync_actions())
        else:
            return super().on_control(message)
        return None

    def _dispatch(self, actions: list[Any], arrival: float | None = None) -> None:
        """Carry out ``actions``; packets delivered go on stamped with ``arrival`` (that of
        the datagrams they came in, or now)."""
        delivered: list[Packet] = []
        events: list[Action] = []
        self.transmitter.carry_out(actions, self.stats.drops, delivered, events)
        onward: list[Action] = []
        routes: list[Any] = []
        for action in events:
            if isinstance(action, HandOverDatagram):
                assert self.doors is not None  # only a sharded device hands over
                self.doors.datagram(action.worker, action.data, action.source)
            elif isinstance(action, RouteChanges):
                self.tracker.mark(action.owners())
                routes += action.entries
            else:
                if isinstance(action, PeerEndpoint | PeerRemoved):
                    self.tracker.mark((action.peer,))
                    if self.shard is not None and isinstance(action, PeerEndpoint):
                        self.moved[action.peer] = action.endpoint
                onward.append(action)
        if self.doors is not None:
            self.flush_handover(self.doors)
        if routes:
            # One value for all the batch's route changes, in their order. The encrypt stage
            # applies a batch whole, between packets, so where it goes in the batch is moot.
            onward.insert(0, RouteChanges(tuple(routes)))
        if len(onward) == 1:
            self.encrypt.tell(onward[0])
        elif onward:
            self.encrypt.tell(DeviceActions(tuple(onward)))
        if delivered:
            self.emit(
                self.outlet,
                tuple(delivered),
                sum(map(len, map(_DATA, delivered))),
                time.monotonic() if arrival is None else arrival,
            )

    def figures_beside(self) -> tuple[Mapping[str, int] | None, Mapping[str, Any] | None]:
        device = self.device
        if device is None:
            return None, None
        # "peers": how many this device holds (a worker's share of the interface's)
        return device.drops, {"events": dict(device.events), "peers": len(device.peer_map)}
