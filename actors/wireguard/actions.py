"""What the protocol core asks its I/O shell to do, as immutable values.

The core never performs I/O. Its methods return lists of these actions, of three kinds:

- *External* actions are for the outside world: :class:`Transmit` a datagram to an endpoint, or
  :class:`Deliver` a decrypted packet to the TUN device.
- *Hand-over* actions exist only where worker processes share the interface, each owning some
  of the peers: :class:`HandOverPackets` and :class:`HandOverDatagram` name the worker that
  owns what this one read, for the shell to pass it on (:mod:`actors.io.handover`).
- *Internal* actions carry state between the two owners inside the core: the :class:`Device`
  (handshakes, receive keys, replay windows, timers) and the :class:`Encryptor` (send keys and
  counters, outbound routing, staged packets). In one thread :class:`Tunnel` routes them
  directly; in the actor pipeline they travel as messages between the decrypt and encrypt stages.

Peers are named by their 32-byte public key, an immutable value both owners understand.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..packet import Packet
from .allowedips import AllowedIPs, RouteChanges
from .keypair import SendKeys
from .sharding import PeerDirectory

__all__ = [
    "Action",
    "Deliver",
    "DeliverBatch",
    "DirectoryUpdate",
    "Endpoint",
    "HandOverDatagram",
    "HandOverPackets",
    "HandshakeWanted",
    "PeerEndpoint",
    "PeerRemoved",
    "RouteChanges",
    "Routes",
    "SendKeepalive",
    "SendKeysUpdate",
    "Sent",
    "StagedDropped",
    "Transmit",
    "TransmitBatch",
    "TunnelReply",
]

Endpoint = tuple[str, int]
"""A UDP endpoint as (host, port), the host in its textual form (no IPv6 brackets)."""


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send ``data`` as one UDP datagram to ``endpoint``."""

    data: bytes
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class Deliver:
    """Write ``packet`` to the TUN device; it came from ``peer`` and passed every check."""

    packet: Packet
    peer: bytes


@dataclass(frozen=True, slots=True)
class TransmitBatch:
    """Send each of ``datagrams`` to ``endpoint``: one action for a run of packets on one
    session, so the fast path builds no object per packet (see :mod:`.transport`)."""

    datagrams: tuple[bytes, ...]
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class DeliverBatch:
    """Write ``packets``, in order, to the TUN device; all came from ``peer``. The batch form
    of :class:`Deliver`."""

    packets: tuple[Packet, ...]
    peer: bytes


@dataclass(frozen=True, slots=True)
class HandOverPackets:
    """Packets from the host for peers that ``worker`` owns: pass them on, in order, for it
    to encrypt."""

    worker: int
    packets: tuple[Packet, ...]


@dataclass(frozen=True, slots=True)
class HandOverDatagram:
    """A handshake initiation from a peer that ``worker`` owns: pass it on with the endpoint
    it came from, for that worker to answer."""

    worker: int
    data: bytes
    source: Endpoint


# Device -> Encryptor


@dataclass(frozen=True, slots=True)
class SendKeysUpdate:
    """The session ``peer`` must now send on; None wipes it. ``confirm``: send something now
    (the staged packets, or a keepalive) so the responder learns the new session is live."""

    peer: bytes
    keys: SendKeys | None
    confirm: bool = False


@dataclass(frozen=True, slots=True)
class PeerEndpoint:
    """Where ``peer`` is now reached: configured, or learnt from an authenticated packet."""

    peer: bytes
    endpoint: Endpoint | None


@dataclass(frozen=True, slots=True)
class SendKeepalive:
    """A timer wants an empty authenticated packet sent to ``peer``."""

    peer: bytes


@dataclass(frozen=True, slots=True)
class StagedDropped:
    """The handshake with ``peer`` gave up: drop the packets waiting for it."""

    peer: bytes


@dataclass(frozen=True, slots=True)
class Routes:
    """A new outbound routing table. Ownership passes to the receiver; the sender keeps none."""

    table: AllowedIPs[bytes]


@dataclass(frozen=True, slots=True)
class DirectoryUpdate:
    """Who owns which peer now, and this device's own number among the workers: the encrypt
    side routes by the whole interface's table and hands over what it does not own."""

    directory: PeerDirectory | None
    worker: int


@dataclass(frozen=True, slots=True)
class PeerRemoved:
    peer: bytes


@dataclass(frozen=True, slots=True)
class TunnelReply:
    """Send ``packet`` (made by the core, e.g. an ICMP error) into the tunnel, routed by its
    destination like any packet from the host."""

    packet: Packet


# Encryptor -> Device


@dataclass(frozen=True, slots=True)
class HandshakeWanted:
    """``peer`` has no usable session (or an ageing one) and has traffic to send."""

    peer: bytes


@dataclass(frozen=True, slots=True)
class Sent:
    """Authenticated packets went out to ``peer``: ``data`` of them carried data, the rest were
    keepalives. Aggregated per batch, since the timers only need to know that it happened."""

    peer: bytes
    data: int
    keepalives: int
    data_bytes: int


Action = (
    Transmit
    | Deliver
    | TransmitBatch
    | DeliverBatch
    | SendKeysUpdate
    | PeerEndpoint
    | SendKeepalive
    | StagedDropped
    | Routes
    | RouteChanges[bytes]
    | PeerRemoved
    | TunnelReply
    | HandshakeWanted
    | Sent
    | HandOverPackets
    | HandOverDatagram
    | DirectoryUpdate
)
