"""The send path: outbound routing, send counters, staged packets (wireguard-go's send.go).

The :class:`Encryptor` owns the counters of the sessions it sends on, and nothing else does: that
is what lets it run on its own thread. It learns of new sessions, endpoints and routes from the
:class:`~.device.Device` as immutable actions, and tells the device about traffic it sent and
handshakes it needs, also as actions.
"""

from __future__ import annotations

import struct
from collections import Counter, deque
from collections.abc import Iterable

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..packet import MAX_PACKET_SIZE, Packet
from . import drops
from .actions import (
    Action,
    Endpoint,
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
    TunnelReply,
)
from .allowedips import AllowedIPs
from .constants import (
    MAX_STAGED_PACKETS,
    PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
)
from .keypair import SendKeys

__all__ = ["Encryptor"]

_HEADER = struct.Struct("<IIQ")
_NONCE = struct.Struct("<4xQ")
_PADDING = [bytes(n) for n in range(PADDING_MULTIPLE)]


# Most of a hub's peers never have a packet staged, and an empty deque costs ~600 bytes: they all
# start with this one, which holds nothing (maxlen 0), until _stage gives a peer its own.
_NOTHING_STAGED: deque[Packet] = deque(maxlen=0)


class _SendPeer:
    __slots__ = ("aead", "counter", "endpoint", "keys", "staged")

    def __init__(self) -> None:
        self.keys: SendKeys | None = None
        self.aead: ChaCha20Poly1305 | None = None
        self.counter = 0
        self.endpoint: Endpoint | None = None
        self.staged: deque[Packet] = _NOTHING_STAGED

    def usable(self, now: float) -> bool:
        keys = self.keys
        return (
            keys is not None
            and self.counter < REJECT_AFTER_MESSAGES
            and now - keys.created < REJECT_AFTER_TIME
        )


class Encryptor:
    """Encrypts outbound packets for the peer their destination routes to."""

    def __init__(self, *, mtu: int = MAX_PACKET_SIZE, max_staged: int = MAX_STAGED_PACKETS) -> None:
        self.mtu = mtu
        self.max_staged = max_staged
        self._routes: AllowedIPs[bytes] = AllowedIPs(index=False)  # looks up, replays deltas
        self._peers: dict[bytes, _SendPeer] = {}
        self.drops: Counter[str] = Counter()
        self._handlers = {
            SendKeysUpdate: self._on_keys,
            PeerEndpoint: self._on_endpoint,
            SendKeepalive: self._on_keepalive,
            StagedDropped: self._on_staged_dropped,
            Routes: self._on_routes,
            RouteChanges: self._on_route_changes,
            PeerRemoved: self._on_removed,
            TunnelReply: self._on_reply,
        }

    # ------------------------------------------------------------------ state from the device

    def handle(self, action: Action, now: float) -> list[Action]:
        """Apply an action addressed to the send side; returns what that causes."""
        out: list[Action] = []
        sent: dict[bytes, list[int]] = {}
        handler = self._handlers.get(type(action))
        if handler is not None:
            handler(action, now, out, sent)  # type: ignore[operator]
        self._report(sent, out)
        return out

    def _peer(self, key: bytes) -> _SendPeer:
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peers[key] = _SendPeer()
        return peer

    def _on_keys(self, a: SendKeysUpdate, now: float, out: list[Action], sent: dict) -> None:
        peer = self._peer(a.peer)
        peer.keys = a.keys
        peer.aead = ChaCha20Poly1305(a.keys.key) if a.keys is not None else None
        peer.counter = 0
        if a.keys is None:
            return
        had_staged = bool(peer.staged)
        self._flush(a.peer, peer, now, out, sent)
        if a.confirm and not had_staged:
            self._encrypt(a.peer, peer, b"", now, out, sent)
        if self._needs_rekey(peer, now):
            out.append(HandshakeWanted(a.peer))

    def _on_endpoint(self, a: PeerEndpoint, now: float, out: list[Action], sent: dict) -> None:
        self._peer(a.peer).endpoint = a.endpoint

    def _on_keepalive(self, a: SendKeepalive, now: float, out: list[Action], sent: dict) -> None:
        peer = self._peers.get(a.peer)
        if peer is None:
            return
        if peer.usable(now):
            self._encrypt(a.peer, peer, b"", now, out, sent)
            # wireguard-go runs keepKeyFreshSending after every send, keepalives included:
            # a peer that only sends keepalives must still renew its session in time.
            if self._needs_rekey(peer, now):
                out.append(HandshakeWanted(a.peer))
        else:
            out.append(HandshakeWanted(a.peer))

    def _on_reply(self, a: TunnelReply, now: float, out: list[Action], sent: dict) -> None:
        out += self.send_many((a.packet,), now)

    def _on_staged_dropped(
        self, a: StagedDropped, now: float, out: list[Action], sent: dict
    ) -> None:
        peer = self._peers.get(a.peer)
        if peer is not None and peer.staged:
            self.drops[drops.STAGED_EXPIRED] += len(peer.staged)
            peer.staged.clear()

    def _on_routes(self, a: Routes, now: float, out: list[Action], sent: dict) -> None:
        self._routes = a.table

    def _on_route_changes(self, a: RouteChanges, now: float, out: list[Action], sent: dict) -> None:
        self._routes.apply(a)

    def _on_removed(self, a: PeerRemoved, now: float, out: list[Action], sent: dict) -> None:
        peer = self._peers.pop(a.peer, None)
        if peer is not None and peer.staged:
            self.drops[drops.STAGED_EXPIRED] += len(peer.staged)

    # ------------------------------------------------------------------ the send path

    def send(self, packet: Packet, now: float) -> list[Action]:
        return self.send_many((packet,), now)

    def send_many(self, packets: Iterable[Packet], now: float) -> list[Action]:
        """Encrypt a batch; timer events for the device are aggregated per peer per batch."""
        out: list[Action] = []
        sent: dict[bytes, list[int]] = {}
        wanted: set[bytes] = set()
        lookup = self._routes.lookup_bytes
        peers = self._peers
        for packet in packets:
            if len(packet.data) > self.mtu:
                self.drops[drops.TOO_BIG] += 1
                continue
            key = lookup(packet.dst_bytes)
            if key is None:
                self.drops[drops.NO_ROUTE] += 1
                continue
            peer = peers.get(key)
            if peer is None:
                peer = self._peer(key)
            if not peer.usable(now) or peer.staged:
                self._stage(peer, packet)
                wanted.add(key)
                continue
            self._encrypt(key, peer, packet.data, now, out, sent)
            if self._needs_rekey(peer, now):
                wanted.add(key)
        for key in wanted:
            out.append(HandshakeWanted(key))
        self._report(sent, out)
        return out

    @staticmethod
    def _needs_rekey(peer: _SendPeer, now: float) -> bool:
        """wireguard-go's keepKeyFreshSending: too many messages, or (initiator) too old."""
        keys = peer.keys
        return keys is not None and (
            peer.counter > REKEY_AFTER_MESSAGES
            or (keys.is_initiator and now - keys.created > REKEY_AFTER_TIME)
        )

    def _stage(self, peer: _SendPeer, packet: Packet) -> None:
        if peer.staged is _NOTHING_STAGED:
            peer.staged = deque()
        if len(peer.staged) >= self.max_staged:
            peer.staged.popleft()
            self.drops[drops.STAGED_OVERFLOW] += 1
        peer.staged.append(packet)

    def _flush(
        self, key: bytes, peer: _SendPeer, now: float, out: list[Action], sent: dict
    ) -> None:
        staged = peer.staged
        while staged and peer.usable(now):
            self._encrypt(key, peer, staged.popleft().data, now, out, sent)

    def _encrypt(
        self,
        key: bytes,
        peer: _SendPeer,
        plaintext: bytes,
        now: float,
        out: list[Action],
        sent: dict[bytes, list[int]],
    ) -> None:
        endpoint = peer.endpoint
        if endpoint is None:
            self.drops[drops.NO_ENDPOINT] += 1
            return
        keys = peer.keys
        aead = peer.aead
        assert keys is not None and aead is not None
        counter = peer.counter
        peer.counter = counter + 1
        pad = _PADDING[-len(plaintext) % PADDING_MULTIPLE]
        ciphertext = aead.encrypt(_NONCE.pack(counter), plaintext + pad, None)
        datagram = _HEADER.pack(4, keys.remote_index, counter) + ciphertext
        out.append(Transmit(datagram, endpoint))
        tally = sent.get(key)
        if tally is None:
            tally = sent[key] = [0, 0, 0]
        if plaintext:
            tally[0] += 1
        else:
            tally[1] += 1
        tally[2] += len(datagram)

    @staticmethod
    def _report(sent: dict[bytes, list[int]], out: list[Action]) -> None:
        for key, (data, keepalives, nbytes) in sent.items():
            out.append(Sent(key, data, keepalives, nbytes))

    # ------------------------------------------------------------------ introspection

    def staged_count(self, key: bytes) -> int:
        peer = self._peers.get(key)
        return len(peer.staged) if peer is not None else 0

    def send_counter(self, key: bytes) -> int:
        peer = self._peers.get(key)
        return peer.counter if peer is not None else 0

    def has_keys(self, key: bytes) -> bool:
        peer = self._peers.get(key)
        return peer is not None and peer.keys is not None
