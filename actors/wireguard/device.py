"""The handshake owner and the receive path: wireguard-go's device, peer, receive and timers.

:class:`Device` owns everything that must be decided in one place: our identity, the peers'
handshakes, the receiver index table, the receive half of every session with its replay window,
endpoint roaming and the timers of whitepaper section 6. It is sans-I/O: each method takes the
datagram (or event) and ``now``, a monotonic time in seconds supplied by the caller, and returns
:mod:`actions`. It never reads a clock, sleeps, or touches a socket.

The send half (counters, outbound routing, staged packets) is the :class:`~.encryptor.Encryptor`,
a separate owner that the device talks to only through actions.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from loguru import logger

from ..packet import Packet, PacketError
from . import drops
from .actions import (
    Action,
    Deliver,
    Endpoint,
    HandshakeWanted,
    PeerEndpoint,
    PeerRemoved,
    Routes,
    SendKeepalive,
    SendKeysUpdate,
    Sent,
    StagedDropped,
    Transmit,
)
from .allowedips import AllowedIPs, Network, parse_prefix
from .constants import (
    HANDSHAKE_INITIATION_RATE,
    KEEPALIVE_TIMEOUT,
    MAX_PEERS,
    MAX_TIMER_HANDSHAKES,
    MSG_COOKIE_REPLY,
    MSG_INITIATION,
    MSG_RESPONSE,
    MSG_TRANSPORT,
    REJECT_AFTER_TIME,
    REKEY_ON_RECEIVE_AGE,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    UNDER_LOAD_HANDSHAKES_PER_SECOND,
    UNDER_LOAD_HOLD,
)
from .cookie import CookieChecker, CookieGenerator
from .crypto import tai64n
from .keypair import ReceiveSession
from .messages import CookieReply, Initiation, MessageError, Response, decode
from .noise import (
    HandshakeError,
    HandshakeState,
    Identity,
    PeerHandshake,
    accept_initiation,
    begin_session,
    consume_initiation,
    consume_response,
    create_initiation,
    create_response,
    zero_key,
)
from .ratelimiter import RateLimiter

__all__ = ["Device", "DeviceError", "PeerConfig", "PeerState"]

_TRANSPORT_HEADER = struct.Struct("<IIQ")
_NONCE = struct.Struct("<4xQ")
_MAX_INDEX_TRIES = 64


class DeviceError(ValueError):
    """A configuration request the device cannot honour (bad key, too many peers...)."""


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


_NEW_PEER = PeerConfig(bytes(32))  # what a new peer's unset fields start from


def short_key(key: bytes) -> str:
    """A public key as a short, log-friendly tag (never used for private keys)."""
    return base64.b64encode(key).decode()[:8] + "…"


@dataclass(frozen=True, slots=True)
class PeerState:
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
    last_handshake_ns: int = 0  # UNIX time of the last completed handshake, 0 if none
    handshakes: int = 0


_DEADLINES = frozenset(
    {
        "retransmit_handshake",
        "send_keepalive",
        "new_handshake",
        "zero_key_material",
        "persistent_keepalive",
    }
)


@dataclass(slots=True)
class _Timers:
    """Absolute deadlines (monotonic seconds); None when not pending. Whitepaper section 6."""

    retransmit_handshake: float | None = None
    send_keepalive: float | None = None
    new_handshake: float | None = None
    zero_key_material: float | None = None
    persistent_keepalive: float | None = None
    need_another_keepalive: bool = False
    handshake_attempts: int = 0
    sent_last_minute_handshake: bool = False
    # Where an armed deadline is reported: the device's peers a tick must look at. A hub's
    # 100,000 mostly idle peers would otherwise cost a scan of every peer per tick.
    armed: dict[bytes, None] | None = field(default=None, repr=False, compare=False)
    key: bytes = field(default=b"", repr=False, compare=False)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if value is not None and name in _DEADLINES:
            armed = self.armed
            if armed is not None:
                armed[self.key] = None

    def earliest(self) -> float | None:
        times = [
            t
            for t in (
                self.retransmit_handshake,
                self.send_keepalive,
                self.new_handshake,
                self.zero_key_material,
                self.persistent_keepalive,
            )
            if t is not None
        ]
        return min(times) if times else None


@dataclass(slots=True)
class _Peer:
    config: PeerConfig
    handshake: PeerHandshake
    cookies: CookieGenerator
    endpoint: Endpoint | None
    previous: ReceiveSession | None = None
    current: ReceiveSession | None = None
    next: ReceiveSession | None = None
    timers: _Timers = field(default_factory=_Timers)
    last_sent_handshake: float | None = None
    last_initiation_consumed: float | None = None
    stats: PeerStats = field(default_factory=PeerStats)

    @property
    def key(self) -> bytes:
        return self.config.public_key


class Device:
    """One WireGuard interface's protocol state, minus the sending counters."""

    def __init__(
        self,
        private_key: bytes | None,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        wall_offset: float = 0.0,
        under_load_threshold: int = UNDER_LOAD_HANDSHAKES_PER_SECOND,
    ) -> None:
        """``wall_offset`` is added to ``now`` to get UNIX time, for TAI64N timestamps; the
        shell sets it once from the real clocks so the core itself never reads one."""
        self._rng = rng
        self.wall_offset = wall_offset
        self.identity: Identity | None = None
        self._checker: CookieChecker | None = None
        self._set_identity(private_key)
        self._limiter = RateLimiter()
        self._peers: dict[bytes, _Peer] = {}
        self._indices: dict[int, tuple[_Peer, ReceiveSession | None]] = {}
        self._routes: AllowedIPs[bytes] = AllowedIPs(journal=True)
        self._armed: dict[bytes, None] = {}  # peers that may have a timer pending (_Timers)
        self.under_load_threshold = under_load_threshold
        self._load_window_start = float("-inf")
        self._load_count = 0
        self._under_load_until = float("-inf")
        self.drops: Counter[str] = Counter()
        self.events: Counter[str] = Counter()

    # ------------------------------------------------------------------ configuration

    def _set_identity(self, private_key: bytes | None) -> None:
        if private_key is None or not any(private_key):
            self.identity, self._checker = None, None
            return
        if len(private_key) != 32:
            raise DeviceError("a private key is 32 bytes")
        self.identity = Identity.from_private(private_key)
        self._checker = CookieChecker(self.identity.public, self._rng)

    @property
    def public_key(self) -> bytes | None:
        return self.identity.public if self.identity is not None else None

    @property
    def private_key(self) -> bytes | None:
        return self.identity.private if self.identity is not None else None

    def set_private_key(self, private_key: bytes | None) -> list[Action]:
        """Change (or remove, with None or zeros) our static key. Every session and handshake
        made with the old key is void; a peer that has the new public key is removed, as
        wireguard-go does, since no one can have a session with themselves."""
        if private_key == self.private_key:
            return []
        self._set_identity(private_key)
        out: list[Action] = []
        own = self.public_key
        if own is not None and own in self._peers:
            out += self.remove_peer(own)
        for peer in self._peers.values():
            peer.handshake.rekey_identity(self.identity)
            self._zero_keys(peer, out)
        return out

    def remove_all_peers(self) -> list[Action]:
        out: list[Action] = []
        for key in list(self._peers):
            out += self.remove_peer(key)
        return out

    def update_peer(
        self,
        key: bytes,
        now: float,
        *,
        create: bool = True,
        preshared_key: bytes | None = None,
        endpoint: Endpoint | None = None,
        persistent_keepalive: int | None = None,
        replace_allowed_ips: bool = False,
        allowed_ips: tuple[Network, ...] = (),
    ) -> list[Action]:
        """Apply a UAPI-style change to one peer: fields left None are unchanged, allowed IPs
        accumulate unless ``replace_allowed_ips``. With ``create`` False (``update_only``) an
        unknown peer is ignored. The interface's own key is ignored, as in wireguard-go."""
        if key == self.public_key:
            return []
        existing = self._peers.get(key)
        if existing is None and not create:
            return []
        base = existing.config if existing is not None else _NEW_PEER
        kept = () if replace_allowed_ips or existing is None else tuple(self._routes.prefixes(key))
        psk = (
            base.preshared_key
            if preshared_key is None
            else (preshared_key if any(preshared_key) else None)
        )
        config = PeerConfig(
            key,
            psk,
            endpoint if endpoint is not None else (existing.endpoint if existing else None),
            kept + tuple(allowed_ips),
            base.persistent_keepalive if persistent_keepalive is None else persistent_keepalive,
        )
        turned_on = bool(config.persistent_keepalive) and not base.persistent_keepalive
        out = self.add_peer(config, now, keepalive_now=turned_on or existing is None)
        if endpoint is not None and existing is not None:
            existing.endpoint = endpoint
            out.append(PeerEndpoint(key, endpoint))
        return out

    def peers(self) -> list[bytes]:
        return list(self._peers)

    def peer_config(self, peer: bytes) -> PeerConfig:
        return self._peers[peer].config

    def peer_stats(self, peer: bytes) -> PeerStats:
        return self._peers[peer].stats

    def peer_endpoint(self, peer: bytes) -> Endpoint | None:
        return self._peers[peer].endpoint

    def routes(self) -> AllowedIPs[bytes]:
        """A copy of the routing table, for the encrypting side (which then owns it)."""
        return self._routes.copy()

    def add_peer(
        self, config: PeerConfig, now: float, *, keepalive_now: bool = True
    ) -> list[Action]:
        """Add or replace a peer. Replacing keeps its sessions if the key is unchanged."""
        if config.public_key == self.public_key:
            raise DeviceError("a peer cannot have the interface's own public key")
        existing = self._peers.get(config.public_key)
        if existing is None and len(self._peers) >= MAX_PEERS:
            raise DeviceError(f"at most {MAX_PEERS} peers")
        if existing is not None:
            peer = existing
            peer.config = config
            peer.handshake.preshared_key = config.preshared_key or zero_key()
            if config.endpoint is not None:
                peer.endpoint = config.endpoint
            self._routes.remove_value(peer.key)
        else:
            hs = PeerHandshake(self.identity, config.public_key, config.preshared_key or zero_key())
            timers = _Timers(armed=self._armed, key=config.public_key)
            cookies = CookieGenerator(config.public_key)
            peer = _Peer(config, hs, cookies, config.endpoint, timers=timers)
            self._peers[config.public_key] = peer
        for net in config.allowed_ips:
            self._routes.insert(net, peer.key)
        out: list[Action] = [
            self._routes.take_changes(),
            PeerEndpoint(peer.key, peer.endpoint),
        ]
        if config.persistent_keepalive:
            # wireguard-go sends a keepalive as soon as persistent keepalive is switched on.
            if keepalive_now or peer.timers.persistent_keepalive is None:
                peer.timers.persistent_keepalive = now
        else:
            peer.timers.persistent_keepalive = None
        return out

    def sync_actions(self) -> list[Action]:
        """Everything the send side needs to rebuild its view (after it restarted): routes and
        endpoints. Never keys: see the encrypt stage."""
        self._routes.take_changes()  # the full copy below supersedes any pending change
        out: list[Action] = [Routes(self._routes.copy(index=False))]
        out += [PeerEndpoint(p.key, p.endpoint) for p in self._peers.values()]
        return out

    def remove_peer(self, key: bytes) -> list[Action]:
        peer = self._peers.pop(key, None)
        if peer is None:
            return []
        # Only the peer's own indices, not a scan of the table: O(1) at any number of peers.
        for index in _own_indices(peer):
            entry = self._indices.get(index)
            if entry is not None and entry[0] is peer:
                del self._indices[index]
        self._routes.remove_value(key)
        return [self._routes.take_changes(), PeerRemoved(key)]

    # ------------------------------------------------------------------ receive path

    def receive(self, data: bytes, source: Endpoint, now: float) -> list[Action]:
        """Process one datagram that arrived from ``source``."""
        out: list[Action] = []
        self._receive(data, source, now, out)
        return out

    def receive_many(self, datagrams: Iterable[tuple[bytes, Endpoint]], now: float) -> list[Action]:
        out: list[Action] = []
        for data, source in datagrams:
            self._receive(data, source, now, out)
        return out

    def _receive(self, data: bytes, source: Endpoint, now: float, out: list[Action]) -> None:
        if len(data) < 4 or data[1] or data[2] or data[3]:
            self.drops[drops.MALFORMED] += 1
            return
        kind = data[0]
        if kind == MSG_TRANSPORT:
            self._receive_transport(data, source, now, out)
        elif kind in (MSG_INITIATION, MSG_RESPONSE, MSG_COOKIE_REPLY):
            try:
                msg = decode(data)
            except MessageError:
                self.drops[drops.MALFORMED] += 1
                return
            if isinstance(msg, CookieReply):
                self._receive_cookie_reply(msg, now)
            elif isinstance(msg, Initiation | Response):
                self._receive_handshake(data, msg, source, now, out)
        else:
            self.drops[drops.MALFORMED] += 1

    def _receive_transport(
        self, data: bytes, source: Endpoint, now: float, out: list[Action]
    ) -> None:
        if len(data) < 32:
            self.drops[drops.MALFORMED] += 1
            return
        _, receiver, counter = _TRANSPORT_HEADER.unpack_from(data)
        entry = self._indices.get(receiver)
        if entry is None or entry[1] is None:
            self.drops[drops.UNKNOWN_INDEX] += 1
            return
        peer, session = entry
        if now - session.keypair.created >= REJECT_AFTER_TIME:
            self.drops[drops.EXPIRED_SESSION] += 1
            return
        if not session.replay.check(counter):
            self.drops[drops.REPLAY] += 1
            return
        try:
            plaintext = session.aead.decrypt(_NONCE.pack(counter), memoryview(data)[16:], None)
        except InvalidTag:
            self.drops[drops.BAD_TAG] += 1
            return
        if not session.replay.update(counter):
            self.drops[drops.REPLAY] += 1
            return
        # Authenticated from here on.
        peer.stats.rx_bytes += len(data)
        if session is peer.next:
            self._confirm_next(peer, now, out)
        self._keep_key_fresh_receiving(peer, now, out)
        self._authenticated_traversal(peer, now)
        peer.timers.new_handshake = None  # any authenticated packet received
        if source != peer.endpoint:
            peer.endpoint = source
            out.append(PeerEndpoint(peer.key, source))
        if not plaintext:
            self.events["keepalives_received"] += 1
            return
        # data received: schedule a keepalive unless one is pending already
        if peer.timers.send_keepalive is None:
            peer.timers.send_keepalive = now + KEEPALIVE_TIMEOUT
        else:
            peer.timers.need_another_keepalive = True
        try:
            packet = Packet.from_padded(plaintext)
        except PacketError:
            self.drops[drops.BAD_INNER_PACKET] += 1
            return
        if self._routes.lookup_bytes(packet.src_bytes) != peer.key:
            self.drops[drops.SOURCE_NOT_ALLOWED] += 1
            return
        out.append(Deliver(packet, peer.key))

    def _confirm_next(self, peer: _Peer, now: float, out: list[Action]) -> None:
        """The initiator used the session we offered as responder: it becomes current."""
        old = peer.previous
        if old is not None:
            self._indices.pop(old.local_index, None)
        peer.previous = peer.current
        peer.current = peer.next
        peer.next = None
        self._handshake_complete(peer, now)
        assert peer.current is not None
        out.append(SendKeysUpdate(peer.key, peer.current.keypair.sending(peer.key)))

    def _keep_key_fresh_receiving(self, peer: _Peer, now: float, out: list[Action]) -> None:
        if peer.timers.sent_last_minute_handshake:
            return
        current = peer.current
        if (
            current is not None
            and current.keypair.is_initiator
            and now - current.created > REKEY_ON_RECEIVE_AGE
        ):
            peer.timers.sent_last_minute_handshake = True
            self._send_initiation(peer, now, out, retry=False)

    # ------------------------------------------------------------------ handshakes

    def _under_load(self, now: float) -> bool:
        if now - self._load_window_start >= 1.0:
            self._load_window_start = now
            self._load_count = 0
        self._load_count += 1
        if self._load_count > self.under_load_threshold:
            self._under_load_until = now + UNDER_LOAD_HOLD
        return now < self._under_load_until

    def _receive_handshake(
        self,
        data: bytes,
        msg: Initiation | Response,
        source: Endpoint,
        now: float,
        out: list[Action],
    ) -> None:
        if self._checker is None or self.identity is None:
            self.drops[drops.NO_PRIVATE_KEY] += 1
            return
        if not self._checker.check_mac1(data):
            self.drops[drops.BAD_MAC1] += 1
            return
        if self._under_load(now):
            src = _source_bytes(source)
            if src is None:
                self.drops[drops.MALFORMED] += 1
                return
            if not self._checker.check_mac2(data, src, now):
                reply = self._checker.create_reply(data, msg.sender, src, now)
                out.append(Transmit(reply, source))
                self.drops[drops.COOKIE_SENT] += 1
                return
            if not self._limiter.allow(src[:-2], now):
                self.drops[drops.RATE_LIMITED] += 1
                return
        if isinstance(msg, Initiation):
            self._receive_initiation(msg, source, now, out)
        else:
            self._receive_response(msg, source, now, out)

    def _receive_initiation(
        self, msg: Initiation, source: Endpoint, now: float, out: list[Action]
    ) -> None:
        assert self.identity is not None
        try:
            consumed = consume_initiation(self.identity, msg)
        except HandshakeError:
            self.drops[drops.BAD_HANDSHAKE] += 1
            return
        peer = self._peers.get(consumed.remote_static)
        if peer is None:
            self.drops[drops.UNKNOWN_PEER] += 1
            return
        hs = peer.handshake
        if hs.static_static is None:
            self.drops[drops.BAD_HANDSHAKE] += 1
            return
        if consumed.timestamp <= hs.last_timestamp:
            self.drops[drops.STALE_TIMESTAMP] += 1
            return
        last = peer.last_initiation_consumed
        if last is not None and now - last <= HANDSHAKE_INITIATION_RATE:
            self.drops[drops.INITIATION_FLOOD] += 1
            return
        peer.last_initiation_consumed = now
        accept_initiation(hs, consumed)
        self._drop_handshake_index(peer)
        index = self._new_index(peer, None)
        try:
            body = create_response(hs, index, self._rng)
        except HandshakeError:
            self._indices.pop(index, None)
            self.drops[drops.BAD_HANDSHAKE] += 1
            return
        out.append(Transmit(peer.cookies.stamp(body, now), source))
        keypair = begin_session(hs, now)
        session = ReceiveSession(keypair)
        self._indices[index] = (peer, session)
        # As responder the new session waits in `next` until the initiator uses it.
        for old in (peer.next, peer.previous):
            if old is not None:
                self._indices.pop(old.local_index, None)
        peer.next = session
        peer.previous = None
        self._session_derived(peer, now)
        self._authenticated_traversal(peer, now)
        peer.timers.send_keepalive = None  # any authenticated packet sent
        if source != peer.endpoint:
            peer.endpoint = source
            out.append(PeerEndpoint(peer.key, source))
        self.events["initiations_answered"] += 1
        logger.debug("handshake initiation from {} answered", short_key(peer.key))

    def _receive_response(
        self, msg: Response, source: Endpoint, now: float, out: list[Action]
    ) -> None:
        entry = self._indices.get(msg.receiver)
        if entry is None or entry[1] is not None:
            self.drops[drops.UNKNOWN_INDEX] += 1
            return
        peer = entry[0]
        assert self.identity is not None
        try:
            consume_response(self.identity, peer.handshake, msg)
        except HandshakeError:
            self.drops[drops.BAD_HANDSHAKE] += 1
            return
        keypair = begin_session(peer.handshake, now)
        session = ReceiveSession(keypair)
        self._indices[keypair.local_index] = (peer, session)
        # As initiator the new session is current at once; the old current becomes previous.
        if peer.next is not None:
            if peer.current is not None:
                self._indices.pop(peer.current.local_index, None)
            demoted = peer.next
            peer.next = None
        else:
            demoted = peer.current
        if peer.previous is not None and peer.previous is not demoted:
            self._indices.pop(peer.previous.local_index, None)
        peer.previous = demoted
        peer.current = session
        self._session_derived(peer, now)
        self._handshake_complete(peer, now)
        self._authenticated_traversal(peer, now)
        peer.timers.new_handshake = None  # any authenticated packet received
        if source != peer.endpoint:
            peer.endpoint = source
            out.append(PeerEndpoint(peer.key, source))
        out.append(SendKeysUpdate(peer.key, keypair.sending(peer.key), confirm=True))
        self.events["responses_consumed"] += 1
        logger.debug("handshake with {} complete (initiator)", short_key(peer.key))

    def peer_states(self) -> list[PeerState]:
        """An immutable view of every peer, for `wg show` and `wgactors status`."""
        return [
            PeerState(
                p.key,
                p.config.preshared_key,
                p.endpoint,
                p.stats.last_handshake_ns,
                p.stats.rx_bytes,
                p.stats.tx_bytes,
                p.config.persistent_keepalive,
                tuple(self._routes.prefixes(p.key)),
            )
            for p in self._peers.values()
        ]

    def configs(self) -> tuple[PeerConfig, ...]:
        """The peers as configuration (allowed IPs as routed now), to rebuild the device."""
        return tuple(self._config_now(p) for p in self._peers.values())

    def config_now(self, key: bytes) -> PeerConfig | None:
        """One peer as configuration now (None if it is gone): what :meth:`configs` holds for
        it, at the cost of one peer, so a published configuration can follow a change."""
        peer = self._peers.get(key)
        return self._config_now(peer) if peer is not None else None

    def _config_now(self, p: _Peer) -> PeerConfig:
        routed = tuple(self._routes.prefixes(p.key))
        config = p.config
        if routed == config.allowed_ips and p.endpoint == config.endpoint:
            return config  # unchanged since configured: share the immutable value
        return PeerConfig(
            p.key, config.preshared_key, p.endpoint, routed, config.persistent_keepalive
        )

    def _receive_cookie_reply(self, msg: CookieReply, now: float) -> None:
        entry = self._indices.get(msg.receiver)
        if entry is None:
            self.drops[drops.UNKNOWN_INDEX] += 1
            return
        if not entry[0].cookies.consume_reply(msg, now):
            self.drops[drops.BAD_COOKIE] += 1
            return
        self.events["cookies_received"] += 1

    def _send_initiation(self, peer: _Peer, now: float, out: list[Action], *, retry: bool) -> None:
        if not retry:
            peer.timers.handshake_attempts = 0
        last = peer.last_sent_handshake
        if last is not None and now - last < REKEY_TIMEOUT:
            return
        if self.identity is None:
            self.drops[drops.NO_PRIVATE_KEY] += 1
            return
        if peer.handshake.static_static is None:
            self.drops[drops.BAD_HANDSHAKE] += 1
            return
        peer.last_sent_handshake = now
        self._drop_handshake_index(peer)
        index = self._new_index(peer, None)
        stamp = tai64n(int((now + self.wall_offset) * 1e9))
        body = create_initiation(self.identity, peer.handshake, index, stamp, self._rng)
        message = peer.cookies.stamp(body, now)
        self._authenticated_traversal(peer, now)
        peer.timers.send_keepalive = None
        if peer.endpoint is not None:
            out.append(Transmit(message, peer.endpoint))
        else:
            self.drops[drops.NO_ENDPOINT] += 1
        peer.timers.retransmit_handshake = now + REKEY_TIMEOUT + self._jitter()
        self.events["initiations_sent"] += 1
        logger.debug("handshake initiation to {} (retry={})", short_key(peer.key), retry)

    # ------------------------------------------------------------------ events from the sender

    def handle(self, event: Action, now: float) -> list[Action]:
        """Apply an event from the encrypting side (HandshakeWanted or Sent)."""
        out: list[Action] = []
        if isinstance(event, HandshakeWanted):
            peer = self._peers.get(event.peer)
            if peer is not None:
                self._send_initiation(peer, now, out, retry=False)
        elif isinstance(event, Sent):
            peer = self._peers.get(event.peer)
            if peer is not None:
                peer.stats.tx_bytes += event.data_bytes
                if event.data and peer.timers.new_handshake is None:
                    peer.timers.new_handshake = (
                        now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()
                    )
                peer.timers.send_keepalive = None  # any authenticated packet sent
                self._authenticated_traversal(peer, now)
        return out

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """When :meth:`update_timers` must next be called; None if nothing is pending."""
        peers = self._peers
        times = [
            t
            for key in self._armed
            if (p := peers.get(key)) is not None and (t := p.timers.earliest()) is not None
        ]
        return min(times) if times else None

    def update_timers(self, now: float) -> list[Action]:
        """Fire every timer whose deadline has passed: O(peers with a timer armed)."""
        out: list[Action] = []
        armed = self._armed
        for key in list(armed):
            peer = self._peers.get(key)
            if peer is None or peer.timers.earliest() is None:
                del armed[key]  # gone, or nothing pending: no need to look again until armed
                continue
            t = peer.timers
            if t.retransmit_handshake is not None and now >= t.retransmit_handshake:
                t.retransmit_handshake = None
                self._on_retransmit_handshake(peer, now, out)
            if t.send_keepalive is not None and now >= t.send_keepalive:
                t.send_keepalive = None
                out.append(SendKeepalive(peer.key))
                if t.need_another_keepalive:
                    t.need_another_keepalive = False
                    t.send_keepalive = now + KEEPALIVE_TIMEOUT
            if t.new_handshake is not None and now >= t.new_handshake:
                t.new_handshake = None
                logger.debug("no reply from {}: new handshake", short_key(peer.key))
                self._send_initiation(peer, now, out, retry=False)
            if t.zero_key_material is not None and now >= t.zero_key_material:
                t.zero_key_material = None
                self._zero_keys(peer, out)
            if t.persistent_keepalive is not None and now >= t.persistent_keepalive:
                t.persistent_keepalive = None
                if peer.config.persistent_keepalive:
                    out.append(SendKeepalive(peer.key))
        return out

    def _on_retransmit_handshake(self, peer: _Peer, now: float, out: list[Action]) -> None:
        t = peer.timers
        if t.handshake_attempts > MAX_TIMER_HANDSHAKES:
            logger.debug("handshake with {} gave up", short_key(peer.key))
            out.append(StagedDropped(peer.key))
            if t.zero_key_material is None:
                t.zero_key_material = now + 3 * REJECT_AFTER_TIME
            return
        t.handshake_attempts += 1
        peer.last_sent_handshake = None  # a retry is due now, whatever the 5 s rule says
        self._send_initiation(peer, now, out, retry=True)

    def _zero_keys(self, peer: _Peer, out: list[Action]) -> None:
        for session in (peer.previous, peer.current, peer.next):
            if session is not None:
                self._indices.pop(session.local_index, None)
        peer.previous = peer.current = peer.next = None
        self._drop_handshake_index(peer)
        peer.handshake.clear()
        out.append(SendKeysUpdate(peer.key, None))
        self.events["keys_zeroed"] += 1

    def _session_derived(self, peer: _Peer, now: float) -> None:
        peer.timers.zero_key_material = now + 3 * REJECT_AFTER_TIME

    def _handshake_complete(self, peer: _Peer, now: float) -> None:
        t = peer.timers
        t.retransmit_handshake = None
        t.handshake_attempts = 0
        t.sent_last_minute_handshake = False
        peer.stats.last_handshake_ns = int((now + self.wall_offset) * 1e9)
        peer.stats.handshakes += 1

    def _authenticated_traversal(self, peer: _Peer, now: float) -> None:
        interval = peer.config.persistent_keepalive
        if interval:
            peer.timers.persistent_keepalive = now + interval

    def _jitter(self) -> float:
        return int.from_bytes(self._rng(2), "little") / 65536 * REKEY_TIMEOUT_JITTER_MAX

    # ------------------------------------------------------------------ index table

    def _new_index(self, peer: _Peer, session: ReceiveSession | None) -> int:
        for _ in range(_MAX_INDEX_TRIES):
            index = int.from_bytes(self._rng(4), "little")
            if index not in self._indices:
                self._indices[index] = (peer, session)
                return index
        raise DeviceError("receiver index space exhausted")  # needs ~2^32 live sessions

    def _drop_handshake_index(self, peer: _Peer) -> None:
        hs = peer.handshake
        if hs.state in (HandshakeState.INITIATION_CREATED, HandshakeState.RESPONSE_CREATED):
            entry = self._indices.get(hs.local_index)
            if entry is not None and entry[1] is None:
                del self._indices[hs.local_index]

    def index_count(self) -> int:
        return len(self._indices)

    def has_session(self, peer: bytes) -> bool:
        p = self._peers[peer]
        return p.current is not None


def _own_indices(peer: _Peer) -> list[int]:
    """The receiver indices a peer can hold: its pending handshake's and its sessions'."""
    out = [peer.handshake.local_index]
    out += [s.local_index for s in (peer.previous, peer.current, peer.next) if s is not None]
    return out


def _source_bytes(endpoint: Endpoint) -> bytes | None:
    """The bytes a cookie is bound to: the source address and port."""
    host, port = endpoint
    try:
        packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except (OSError, ValueError):
        return None
    return packed + port.to_bytes(2, "big")
