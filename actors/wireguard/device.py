"""The handshake owner: identity, peers, index table, handshakes sent, timers (device.go).

:class:`Device` owns everything that must be decided in one place: our identity, the peers'
handshakes, the receiver index table, the receive half of every session with its replay window,
endpoint roaming and the timers of whitepaper section 6. It is sans-I/O: each method takes the
datagram (or event), ``now`` (monotonic seconds) and ``wall`` (UNIX seconds), both supplied by
the caller on every call, and returns :mod:`actions`. It never reads a clock, sleeps, or touches
a socket.

The layout follows wireguard-go's ``device/``: :mod:`.peer` (one peer's record),
:mod:`.receive` (the receive path, handshake and transport), :mod:`.timers` (one method per
timer event), :mod:`.indextable`, :mod:`.load` (when to require cookies) and :mod:`.apply`
(a `wg set` request). What is left here is configuration and the handshakes we send.

The send half (counters, outbound routing, staged packets) is the :class:`~.encryptor.Encryptor`,
a separate owner that the device talks to only through actions.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable

from loguru import logger

from . import drops, receive, transport
from .actions import (
    Action,
    DirectoryUpdate,
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
from .allowedips import AllowedIPs, Network
from .constants import (
    MAX_PEERS,
    MAX_TIMER_HANDSHAKES,
    REJECT_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
)
from .cookie import CookieChecker, CookieGenerator
from .crypto import tai64n
from .indextable import IndexTable
from .keypair import ReceiveSession
from .load import UNDER_LOAD_BACKLOG, HandshakeLoad
from .noise import (
    HandshakeError,
    Identity,
    PeerHandshake,
    begin_session,
    create_initiation,
    create_response,
    zero_key,
)
from .oversize import TooBigLimiter
from .peer import DeviceError, Peer, PeerConfig, PeerState, PeerStats, short_key
from .ratelimiter import RateLimiter
from .sharding import PeerDirectory
from .timers import TimerEvent, Timers

__all__ = ["Device", "DeviceError", "PeerConfig", "PeerState"]

_NEW_PEER = PeerConfig(bytes(32))  # what a new peer's unset fields start from


class Device:
    """One WireGuard interface's protocol state, minus the sending counters."""

    def __init__(
        self,
        private_key: bytes | None,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        under_load_threshold: int = UNDER_LOAD_BACKLOG,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        """``shard``: (this worker, of how many) where worker processes share the interface;
        the receiver indices this device hands out name its worker."""
        self.rng = rng
        self.shard = shard
        # who owns the peers this device does not have (set_directory); None: nobody else
        self.directory: PeerDirectory | None = None
        self.identity: Identity | None = None
        self.checker: CookieChecker | None = None
        self._set_identity(private_key)
        self.limiter = RateLimiter()
        self.load = HandshakeLoad(threshold=under_load_threshold)
        self.too_big_limiter = TooBigLimiter()
        self.peer_map: dict[bytes, Peer] = {}
        self.indices = IndexTable(rng, shard)
        # Journaled: each change is sent to the encrypt side as a delta (RouteChanges), so a
        # peer change costs O(its prefixes) at any table size, not a copy of the table.
        self.allowed_ips: AllowedIPs[bytes] = AllowedIPs(journal=True)
        # The peers that may have a timer pending (their Timers report arming here): a tick
        # visits these, not a hub's every idle peer.
        self.armed: dict[bytes, None] = {}
        # The wall-clock time (UNIX seconds) of the call being processed: an input like `now`.
        self.wall = 0.0
        self.drops: Counter[str] = Counter()
        self.events: Counter[str] = Counter()

    @property
    def under_load_threshold(self) -> int:
        """Handshakes waiting before cookies are required (0: always)."""
        return self.load.threshold

    @under_load_threshold.setter
    def under_load_threshold(self, value: int) -> None:
        self.load.threshold = value

    # ------------------------------------------------------------------ configuration

    def _set_identity(self, private_key: bytes | None) -> None:
        if private_key is None or not any(private_key):
            self.identity, self.checker = None, None
            return
        if len(private_key) != 32:
            raise DeviceError("a private key is 32 bytes")
        self.identity = Identity.from_private(private_key)
        self.checker = CookieChecker(self.identity.public, self.rng)

    @property
    def public_key(self) -> bytes | None:
        return self.identity.public if self.identity is not None else None

    @property
    def private_key(self) -> bytes | None:
        return self.identity.private if self.identity is not None else None

    def set_private_key(self, private_key: bytes | None) -> list[Action]:
        """Change (or remove, with None or zeros) our static key. A peer that has the new
        public key is removed, as wireguard-go does, since no one can have a session with
        themselves. Every other peer's handshake in progress is void and its sessions stop
        sending (:meth:`expire_current_sessions`)."""
        if private_key == self.private_key:
            return []
        self._set_identity(private_key)
        out: list[Action] = []
        own = self.public_key
        if own is not None and own in self.peer_map:
            out += self.remove_peer(own)
        for peer in self.peer_map.values():
            self.expire_current_sessions(peer, out)
            peer.handshake.rekey_identity(self.identity)
        return out

    def expire_current_sessions(self, peer: Peer, out: list[Action]) -> None:
        """wireguard-go's ExpireCurrentKeypairs and the kernel's
        wg_noise_expire_current_peer_keypairs: the handshake in progress is dropped and no
        session sends again, but the peer may still be sending on its side of them, so they
        keep receiving (index, replay window) until they expire by the usual rules. The last
        handshake sent is forgotten, so the next packet starts one at once instead of up to
        REKEY_TIMEOUT later."""
        self.indices.delete_handshake(peer.handshake.local_index, peer)
        peer.handshake.clear()
        peer.last_sent_handshake = None
        for session in (peer.current, peer.next):
            if session is not None:
                session.sending_expired = True
        out.append(SendKeysUpdate(peer.key, None))

    def remove_all_peers(self) -> list[Action]:
        out: list[Action] = []
        for key in list(self.peer_map):
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
        existing = self.peer_map.get(key)
        if existing is None and not create:
            return []
        base = existing.config if existing is not None else _NEW_PEER
        kept = (
            () if replace_allowed_ips or existing is None else tuple(self.allowed_ips.prefixes(key))
        )
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

    def peer_stats(self, peer: bytes) -> PeerStats:
        return self.peer_map[peer].stats

    def peer_endpoint(self, peer: bytes) -> Endpoint | None:
        return self.peer_map[peer].endpoint

    def routes(self) -> AllowedIPs[bytes]:
        """A copy of the routing table, for the encrypting side (which then owns it)."""
        return self.allowed_ips.copy()

    def add_peer(
        self, config: PeerConfig, now: float, *, keepalive_now: bool = True
    ) -> list[Action]:
        """Add or replace a peer. Replacing keeps its sessions if the key is unchanged."""
        if config.public_key == self.public_key:
            raise DeviceError("a peer cannot have the interface's own public key")
        existing = self.peer_map.get(config.public_key)
        if existing is None and len(self.peer_map) >= MAX_PEERS:
            raise DeviceError(f"at most {MAX_PEERS} peers")
        if existing is not None:
            peer = existing
            peer.config = config
            peer.handshake.preshared_key = config.preshared_key or zero_key()
            if config.endpoint is not None:
                peer.endpoint = config.endpoint
            self.allowed_ips.remove_value(peer.key)
        else:
            hs = PeerHandshake(self.identity, config.public_key, config.preshared_key or zero_key())
            timers = Timers(armed=self.armed, key=config.public_key)
            cookies = CookieGenerator(config.public_key)
            peer = Peer(config, hs, cookies, config.endpoint, timers=timers)
            self.peer_map[config.public_key] = peer
        for net in config.allowed_ips:
            self.allowed_ips.insert(net, peer.key)
        out: list[Action] = [
            self.allowed_ips.take_changes(),
            PeerEndpoint(peer.key, peer.endpoint),
        ]
        peer.timers.persistent_keepalive_configured(now, config.persistent_keepalive, keepalive_now)
        return out

    def sync_actions(self) -> list[Action]:
        """Everything the send side needs to rebuild its view (after it restarted): routes,
        endpoints and, with worker processes, the directory. Never keys: see the encrypt
        stage."""
        self.allowed_ips.take_changes()  # the full copy below supersedes any pending change
        out: list[Action] = [Routes(self.allowed_ips.copy(index=False))]
        out += [PeerEndpoint(p.key, p.endpoint) for p in self.peer_map.values()]
        if self.directory is not None:
            out.append(DirectoryUpdate(self.directory, self.shard[0]))
        return out

    def set_directory(self, directory: PeerDirectory | None) -> list[Action]:
        """Who owns every peer of the interface, for a device that is one of several workers
        (its ``shard``): an initiation from a peer another worker owns, and a host packet
        routed to one, become hand-over actions instead of drops. The value is kept as it is
        (it never changes); a change is a new one."""
        worker, workers = self.shard
        if directory is not None and directory.workers != workers:
            raise DeviceError(f"a directory for {directory.workers} workers, not {workers}")
        self.directory = directory
        return [DirectoryUpdate(directory, worker)]

    def owner_elsewhere(self, key: bytes) -> int | None:
        directory = self.directory
        if directory is None:
            return None
        owner = directory.owner(key)
        return None if owner == self.shard[0] else owner

    def remove_peer(self, key: bytes) -> list[Action]:
        peer = self.peer_map.pop(key, None)
        if peer is None:
            return []
        self.indices.delete_peer(peer)
        self.allowed_ips.remove_value(key)
        self.armed.pop(key, None)
        return [self.allowed_ips.take_changes(), PeerRemoved(key)]

    # ------------------------------------------------------------------ inputs

    def receive(self, data: bytes, source: Endpoint, now: float, wall: float) -> list[Action]:
        """Process one datagram that arrived from ``source``. ``wall`` is the UNIX time, which
        stamps any initiation the datagram leads to (here and in every entry point below)."""
        self.wall = wall
        out: list[Action] = []
        receive.receive_datagram(self, data, source, now, out)
        return out

    def receive_handed_over(
        self, datagrams: Iterable[tuple[bytes, Endpoint]], now: float, wall: float
    ) -> list[Action]:
        """Datagrams another worker read and passed here (:class:`~.actions.HandOverDatagram`):
        received as if they had arrived here, but never handed on, and without a second load
        check (see :func:`.receive.receive_handshake`)."""
        self.wall = wall
        out: list[Action] = []
        for data, source in datagrams:
            receive.receive_datagram(self, data, source, now, out, handed_over=True)
        return out

    def receive_many(
        self,
        datagrams: Iterable[tuple[bytes, Endpoint]],
        now: float,
        wall: float,
    ) -> list[Action]:
        """A batch of datagrams, in order: one action per packet, the same actions and state
        that :meth:`receive` on each in turn gives (through the fast path of :mod:`.transport`)."""
        return transport.expand(self.receive_batch(datagrams, now, wall))

    def receive_batch(
        self,
        datagrams: Iterable[tuple[bytes, Endpoint]],
        now: float,
        wall: float,
    ) -> list[Action]:
        """As :meth:`receive_many`, with each run's delivered packets in one DeliverBatch."""
        self.wall = wall
        return transport.receive_batch(self, datagrams, now)

    # The hooks of the transport fast path (:class:`.transport.ReceiveOwner`). Each does what
    # :func:`.receive.receive_transport` does at that point, with the same functions.

    def transport_session(self, receiver: int) -> tuple[Peer, ReceiveSession] | None:
        entry = self.indices.lookup(receiver)
        if entry is None or (session := entry[1]) is None:
            return None
        return entry[0], session

    def transport_fresh(self, session: ReceiveSession, now: float) -> bool:
        return now - session.keypair.created < REJECT_AFTER_TIME

    def transport_roamed(self, peer: Peer, source: Endpoint, out: list[Action]) -> None:
        peer.set_endpoint_from_packet(source, out)

    def transport_authenticated(
        self, peer: Peer, session: ReceiveSession, now: float, out: list[Action]
    ) -> None:
        receive.transport_authenticated(self, peer, session, now, out)

    def transport_received(
        self, peer: Peer, nbytes: int, data: int, keepalives: int, now: float
    ) -> None:
        receive.transport_received(self, peer, nbytes, data, keepalives, now)

    def transport_oversize_or_malformed(
        self, peer: Peer, plain: bytes, now: float, out: list[Action]
    ) -> None:
        receive.receive_oversize(self, peer, plain, now, out)

    def route_of(self, address: bytes) -> bytes | None:
        """The peer an inner source address belongs to. One of several workers holds only its
        own peers' prefixes, so a more specific prefix of another worker's peer is found in the
        directory: a peer of ours may not send from an address the interface gives to
        another. (A prefix the directory does not know yet, just configured here, is ours.)"""
        own = self.allowed_ips.lookup_bytes(address)
        directory = self.directory
        if own is None or directory is None:
            return own
        routed = directory.route(address)
        return own if routed is None else routed

    def receive_non_transport(
        self, data: bytes, source: Endpoint, now: float, out: list[Action]
    ) -> None:
        receive.receive_datagram(self, data, source, now, out)

    def handle(self, event: Action, now: float, wall: float) -> list[Action]:
        """Apply an event from the encrypting side (HandshakeWanted or Sent)."""
        self.wall = wall
        out: list[Action] = []
        if isinstance(event, HandshakeWanted):
            peer = self.peer_map.get(event.peer)
            if peer is not None:
                self.send_initiation(peer, now, out, retry=False)
        elif isinstance(event, Sent):
            peer = self.peer_map.get(event.peer)
            if peer is not None:
                peer.stats.tx_bytes += event.data_bytes
                if event.data:
                    peer.timers.data_sent(now, self.jitter())
                peer.timers.any_authenticated_packet_sent()
                peer.timers.any_authenticated_packet_traversal(
                    now, peer.config.persistent_keepalive
                )
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`update_timers` must next be called; None if nothing is pending."""
        peers = self.peer_map
        times = [
            t
            for key in self.armed
            if (p := peers.get(key)) is not None and (t := p.timers.earliest()) is not None
        ]
        return min(times) if times else None

    def update_timers(self, now: float, wall: float) -> list[Action]:
        """Fire every timer whose deadline has passed (wireguard-go's ``expired*``). Visits only
        the peers with a deadline armed: O(those peers), whatever the table's size."""
        self.wall = wall
        out: list[Action] = []
        armed = self.armed
        for key in list(armed):
            peer = self.peer_map.get(key)
            if peer is None or peer.timers.earliest() is None:
                armed.pop(key, None)  # gone, or nothing pending: skipped until armed again
                continue
            for event in peer.timers.expire(now):
                if event is TimerEvent.RETRANSMIT_HANDSHAKE:
                    self._expired_retransmit_handshake(peer, now, out)
                elif event is TimerEvent.SEND_KEEPALIVE:
                    out.append(SendKeepalive(peer.key))
                elif event is TimerEvent.NEW_HANDSHAKE:
                    logger.debug("no reply from {}: new handshake", short_key(peer.key))
                    self.send_initiation(peer, now, out, retry=False)
                elif event is TimerEvent.ZERO_KEY_MATERIAL:
                    # wireguard-go's ZeroAndFlushAll: the keys and the packets waiting for them.
                    self.zero_keys(peer, out)
                    out.append(StagedDropped(peer.key))
                elif event is TimerEvent.PERSISTENT_KEEPALIVE and peer.config.persistent_keepalive:
                    out.append(SendKeepalive(peer.key))
        return out

    def _expired_retransmit_handshake(self, peer: Peer, now: float, out: list[Action]) -> None:
        t = peer.timers
        if t.handshake_attempts > MAX_TIMER_HANDSHAKES:
            logger.debug("handshake with {} gave up", short_key(peer.key))
            out.append(StagedDropped(peer.key))
            if t.zero_key_material is None:
                t.session_derived(now)
            return
        t.handshake_attempts += 1
        self.send_initiation(peer, now, out, retry=True)

    # ------------------------------------------------------------------ handshakes we send

    def send_initiation(self, peer: Peer, now: float, out: list[Action], *, retry: bool) -> None:
        """wireguard-go's SendHandshakeInitiation: at most one per REKEY_TIMEOUT, counting the
        responses we sent, retries included."""
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
        self.indices.delete_handshake(peer.handshake.local_index, peer)
        index = self.indices.new_index_for_handshake(peer)
        # TAI64N from the wall clock of this call: a clock stepped by NTP since start-up is
        # honoured at once, as wireguard-go's tai64n.Now() and the kernel do.
        stamp = tai64n(int(self.wall * 1e9))
        body = create_initiation(self.identity, peer.handshake, index, stamp, self.rng)
        message = peer.cookies.stamp(body, now)
        peer.timers.any_authenticated_packet_traversal(now, peer.config.persistent_keepalive)
        peer.timers.any_authenticated_packet_sent()
        if peer.endpoint is not None:
            out.append(Transmit(message, peer.endpoint))
            peer.stats.tx_bytes += len(message)
        else:
            self.drops[drops.NO_ENDPOINT] += 1
        peer.timers.handshake_initiated(now, self.jitter())
        self.events["initiations_sent"] += 1
        logger.debug("handshake initiation to {} (retry={})", short_key(peer.key), retry)

    def send_response(
        self, peer: Peer, source: Endpoint, now: float, out: list[Action]
    ) -> ReceiveSession | None:
        """wireguard-go's SendHandshakeResponse; None if no response could be made. Answering
        counts as a handshake sent: our own initiation waits REKEY_TIMEOUT for confirmation."""
        peer.last_sent_handshake = now
        hs = peer.handshake
        # Our own pending initiation, if we had one, is superseded (CreateMessageResponse).
        self.indices.delete_handshake(hs.local_index, peer)
        index = self.indices.new_index_for_handshake(peer)
        try:
            body = create_response(hs, index, self.rng)
        except HandshakeError:
            self.indices.delete(index)
            self.drops[drops.BAD_HANDSHAKE] += 1
            return None
        message = peer.cookies.stamp(body, now)
        out.append(Transmit(message, source))
        peer.stats.tx_bytes += len(message)
        session = ReceiveSession(begin_session(hs, now))
        self.indices.swap_for_session(index, peer, session)
        peer.timers.session_derived(now)
        peer.timers.any_authenticated_packet_traversal(now, peer.config.persistent_keepalive)
        peer.timers.any_authenticated_packet_sent()
        return session

    def handshake_complete(self, peer: Peer, now: float) -> None:
        """A session is confirmed (response consumed, or first packet on the one we offered)."""
        peer.timers.handshake_complete()
        peer.stats.last_handshake_ns = int(self.wall * 1e9)
        peer.stats.handshakes += 1

    def zero_keys(self, peer: Peer, out: list[Action]) -> None:
        """Forget every session and the handshake in progress, and their indices."""
        for session in peer.sessions():
            if session is not None:
                self.indices.delete(session.local_index)
        peer.previous = peer.current = peer.next = None
        self.indices.delete_handshake(peer.handshake.local_index, peer)
        peer.handshake.clear()
        out.append(SendKeysUpdate(peer.key, None))
        self.events["keys_zeroed"] += 1

    def jitter(self) -> float:
        return int.from_bytes(self.rng(2), "little") / 65536 * REKEY_TIMEOUT_JITTER_MAX

    # ------------------------------------------------------------------ views

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
                tuple(self.allowed_ips.prefixes(p.key)),
            )
            for p in self.peer_map.values()
        ]

    def configs(self) -> tuple[PeerConfig, ...]:
        """The peers as configuration (allowed IPs as routed now), to rebuild the device."""
        return tuple(self._config_now(p) for p in self.peer_map.values())

    def config_now(self, key: bytes) -> PeerConfig | None:
        """One peer as configuration now (None if it is gone): what :meth:`configs` holds for
        it, at the cost of one peer, so a published configuration can follow a change."""
        peer = self.peer_map.get(key)
        return self._config_now(peer) if peer is not None else None

    def _config_now(self, p: Peer) -> PeerConfig:
        routed = tuple(self.allowed_ips.prefixes(p.key))
        config = p.config
        if routed == config.allowed_ips and p.endpoint == config.endpoint:
            return config  # unchanged since configured: share the immutable value
        return PeerConfig(
            p.key, config.preshared_key, p.endpoint, routed, config.persistent_keepalive
        )

    def index_count(self) -> int:
        return len(self.indices)
