"""One configured peer and everything the device keeps about it (wireguard-go's peer.go).

A :class:`Peer` is owned by the :class:`~.device.Device` alone: its handshake, the receive half
of its sessions, its timers and its endpoint. :class:`PeerConfig` and :class:`PeerState` are the
immutable values that travel out of that owner.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from .actions import Action, Endpoint, PeerEndpoint
from .allowedips import Network, parse_prefix
from .cookie import CookieGenerator
from .keypair import ReceiveSession
from .noise import PeerHandshake
from .timers import Timers

__all__ = ["DeviceError", "Peer", "PeerConfig", "PeerState", "PeerStats", "short_key"]


class DeviceError(ValueError):
    """A configuration request the device cannot honour (bad key, too many peers...)."""


def short_key(key: bytes) -> str:
    """A public key as a short, log-friendly tag (never used for private keys)."""
    return base64.b64encode(key).decode()[:8] + "…"


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """A peer as configured by the user (wg-quick file or UAPI)."""

    public_key: bytes
    preshared_key: bytes | None = None
    endpoint: Endpoint | None = None
    allowed_ips: tuple[Network, ...] = ()
    persistent_keepalive: int = 0

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise DeviceError("a public key is 32 bytes")
        if self.preshared_key is not None and len(self.preshared_key) != 32:
            raise DeviceError("a preshared key is 32 bytes")
        if not 0 <= self.persistent_keepalive <= 65535:
            raise DeviceError("persistent keepalive must be 0..65535 seconds")
        object.__setattr__(
            self,
            "allowed_ips",
            tuple(parse_prefix(a) if isinstance(a, str) else a for a in self.allowed_ips),
        )

    def __repr__(self) -> str:
        return f"PeerConfig({short_key(self.public_key)}, endpoint={self.endpoint})"


@dataclass(frozen=True, slots=True)
class PeerState:
    """What `wg show` and `wgactors status` report about one peer."""

    public_key: bytes
    preshared_key: bytes | None
    endpoint: Endpoint | None
    last_handshake_ns: int
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int
    allowed_ips: tuple[Network, ...]

    def __repr__(self) -> str:
        return f"PeerState({short_key(self.public_key)}, endpoint={self.endpoint})"


@dataclass(slots=True)
class PeerStats:
    rx_bytes: int = 0
    tx_bytes: int = 0
    # Wall-clock (UNIX epoch) nanoseconds of the last completed handshake, 0 if none: the
    # kernel reports epoch time, so it stays true across steps of the system clock.
    last_handshake_ns: int = 0
    handshakes: int = 0


@dataclass(slots=True)
class Peer:
    """The device's private record of one peer."""

    config: PeerConfig
    handshake: PeerHandshake
    cookies: CookieGenerator
    endpoint: Endpoint | None
    previous: ReceiveSession | None = None
    current: ReceiveSession | None = None
    next: ReceiveSession | None = None
    timers: Timers = field(default_factory=Timers)
    # Monotonic time we last sent an initiation or a response; None lets the next one go at once.
    last_sent_handshake: float | None = None
    last_initiation_consumed: float | None = None
    stats: PeerStats = field(default_factory=PeerStats)

    @property
    def key(self) -> bytes:
        return self.config.public_key

    def sessions(self) -> tuple[ReceiveSession | None, ...]:
        return (self.previous, self.current, self.next)

    def set_endpoint_from_packet(self, source: Endpoint, out: list[Action]) -> None:
        """Roaming (whitepaper 6.5): an authenticated packet from a new address moves the peer
        there, and the send side is told. Call only after the packet authenticated."""
        if source != self.endpoint:
            self.endpoint = source
            out.append(PeerEndpoint(self.key, source))
