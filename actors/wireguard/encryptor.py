"""The send path: outbound routing, send counters, staged packets (wireguard-go's send.go).

The :class:`Encryptor` owns the counters of the sessions it sends on, and nothing else does: that
is what lets it run on its own thread. It learns of new sessions, endpoints and routes from the
:class:`~.device.Device` as immutable actions, and tells the device about traffic it sent and
handshakes it needs, also as actions.

Where worker processes share the interface, a :class:`~.sharding.PeerDirectory` (from
:class:`~.actions.DirectoryUpdate`) routes every packet by the whole interface's table, and a
run of packets for a peer another worker owns leaves as one :class:`~.actions.HandOverPackets`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from operator import attrgetter

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..packet import MAX_PACKET_SIZE, Packet
from . import drops
from .actions import (
    Action,
    DirectoryUpdate,
    Endpoint,
    HandOverPackets,
    HandshakeWanted,
    PeerEndpoint,
    PeerRemoved,
    RouteChanges,
    Routes,
    SendKeepalive,
    SendKeysUpdate,
    Sent,
    StagedDropped,
    TransmitBatch,
    TunnelReply,
)
from .allowedips import AllowedIPs
from .constants import (
    MAX_STAGED_PACKETS,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
)
from .keypair import SendKeys
from .sharding import PeerDirectory
from .transport import expand, seal

__all__ = ["Encryptor"]

_DATA = attrgetter("data")
#: What one call sent, per peer: [data packets, keepalives, bytes]; reported as one Sent each.
_Tally = dict[bytes, list[int]]


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
        # with worker processes: who owns which peer, and which worker this one is
        self._directory: PeerDirectory | None = None
        self._worker = 0
        self.drops: Counter[str] = Counter()

    # ------------------------------------------------------------------ state from the device

    def handle(self, action: Action, now: float) -> list[Action]:
        """Apply an action addressed to the send side; returns what that causes."""
        out: list[Action] = []
        sent: _Tally = {}
        match action:
            case SendKeysUpdate():
                self._on_keys(action, now, out, sent)
            case PeerEndpoint():
                self._on_endpoint(action, now, out, sent)
            case SendKeepalive():
                self._on_keepalive(action, now, out, sent)
            case StagedDropped():
                self._on_staged_dropped(action, now, out, sent)
            case Routes():
                self._on_routes(action, now, out, sent)
            case RouteChanges():
                self._on_route_changes(action, now, out, sent)
            case PeerRemoved():
                self._on_removed(action, now, out, sent)
            case TunnelReply():
                self._on_reply(action, now, out, sent)
            case DirectoryUpdate():
                self._directory, self._worker = action.directory, action.worker
        self._report(sent, out)
        return expand(out)

    def _peer(self, key: bytes) -> _SendPeer:
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peers[key] = _SendPeer()
        return peer

    def _on_keys(self, a: SendKeysUpdate, now: float, out: list[Action], sent: _Tally) -> None:
        peer = self._peer(a.peer)
        peer.keys = a.keys
        peer.aead = ChaCha20Poly1305(a.keys.key) if a.keys is not None else None
        peer.counter = 0
        if a.keys is None:
            return
        had_staged = bool(peer.staged)
        self._flush(a.peer, peer, now, out, sent)
        if a.confirm and not had_staged:
            self._seal(a.peer, peer, [b""], out, sent)
        if self._needs_rekey(peer, now):
            out.append(HandshakeWanted(a.peer))

    def _on_endpoint(self, a: PeerEndpoint, now: float, out: list[Action], sent: _Tally) -> None:
        self._peer(a.peer).endpoint = a.endpoint

    def _on_keepalive(self, a: SendKeepalive, now: float, out: list[Action], sent: _Tally) -> None:
        peer = self._peers.get(a.peer)
        if peer is None:
            return
        if peer.usable(now):
            self._seal(a.peer, peer, [b""], out, sent)
            # wireguard-go runs keepKeyFreshSending after every send, keepalives included:
            # a peer that only sends keepalives must still renew its session in time.
            if self._needs_rekey(peer, now):
                out.append(HandshakeWanted(a.peer))
        else:
            out.append(HandshakeWanted(a.peer))

    def _on_reply(self, a: TunnelReply, now: float, out: list[Action], sent: _Tally) -> None:
        out += self.send_many((a.packet,), now)

    def _on_staged_dropped(
        self, a: StagedDropped, now: float, out: list[Action], sent: _Tally
    ) -> None:
        peer = self._peers.get(a.peer)
        if peer is not None and peer.staged:
            self.drops[drops.STAGED_EXPIRED] += len(peer.staged)
            peer.staged.clear()

    def _on_routes(self, a: Routes, now: float, out: list[Action], sent: _Tally) -> None:
        self._routes = a.table

    def _on_route_changes(
        self, a: RouteChanges[bytes], now: float, out: list[Action], sent: _Tally
    ) -> None:
        self._routes.apply(a)

    def _on_removed(self, a: PeerRemoved, now: float, out: list[Action], sent: _Tally) -> None:
        peer = self._peers.pop(a.peer, None)
        if peer is not None and peer.staged:
            self.drops[drops.STAGED_EXPIRED] += len(peer.staged)

    # ------------------------------------------------------------------ the send path

    def send(self, packet: Packet, now: float) -> list[Action]:
        return self.send_many((packet,), now)

    def send_many(self, packets: Iterable[Packet], now: float) -> list[Action]:
        """Encrypt a batch: one Transmit per datagram (see :meth:`send_batch`)."""
        return expand(self.send_batch(packets, now))

    def send_batch(
        self, packets: Iterable[Packet], now: float, *, handed_over: bool = False
    ) -> list[Action]:
        """Encrypt a batch, in order. Consecutive packets to one peer form a run that is sealed
        at once and leaves as one TransmitBatch; timer events for the device are aggregated per
        peer per batch. A run for a peer another worker owns leaves as one HandOverPackets,
        unless the batch was ``handed_over`` here already: it is then dropped (``not_ours``),
        so that two workers whose directories disagree cannot pass packets back and forth."""
        out: list[Action] = []
        sent: _Tally = {}
        wanted: set[bytes] = set()
        directory = self._directory
        lookup = self._routes.lookup_bytes if directory is None else directory.route
        mtu = self.mtu
        drops_ = self.drops
        run: list[Packet] = []
        run_key: bytes | None = None
        last_dst = b""
        key: bytes | None = None
        for packet in packets:
            data = packet.data
            if len(data) > mtu:
                drops_[drops.TOO_BIG] += 1
                continue
            dst = data[16:20] if data[0] >> 4 == 4 else data[24:40]
            if dst != last_dst:
                last_dst = dst
                key = lookup(dst)
            if key is None:
                drops_[drops.NO_ROUTE] += 1
                continue
            if key is not run_key:
                if run_key is not None:
                    self._route_run(run_key, run, now, out, sent, wanted, handed_over)
                    run = []
                run_key = key
            run.append(packet)
        if run_key is not None:
            self._route_run(run_key, run, now, out, sent, wanted, handed_over)
        for key in wanted:
            out.append(HandshakeWanted(key))
        self._report(sent, out)
        return out

    def _route_run(
        self,
        key: bytes,
        run: list[Packet],
        now: float,
        out: list[Action],
        sent: _Tally,
        wanted: set[bytes],
        handed_over: bool,
    ) -> None:
        """A run for one peer: sent here, or handed to the worker that owns the peer."""
        directory = self._directory
        if directory is not None:
            owner = directory.owner(key)
            if owner is not None and owner != self._worker:
                if handed_over:
                    self.drops[drops.NOT_OURS] += len(run)
                else:
                    out.append(HandOverPackets(owner, tuple(run)))
                return
        self._send_run(key, run, now, out, sent, wanted)

    def _send_run(
        self,
        key: bytes,
        run: list[Packet],
        now: float,
        out: list[Action],
        sent: _Tally,
        wanted: set[bytes],
    ) -> None:
        """Packets for one peer: sealed while its session allows, staged once it does not."""
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peer(key)
        keys = peer.keys
        if peer.staged or not peer.usable(now) or keys is None:
            for packet in run:
                self._stage(peer, packet)
            wanted.add(key)
            return
        allowed = REJECT_AFTER_MESSAGES - peer.counter
        if len(run) > allowed:
            for packet in run[allowed:]:
                self._stage(peer, packet)
            wanted.add(key)
            run = run[:allowed]
        self._seal(key, peer, list(map(_DATA, run)), out, sent)
        if self._needs_rekey(peer, now):  # once per run: it only grows with the counter
            wanted.add(key)

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
        self, key: bytes, peer: _SendPeer, now: float, out: list[Action], sent: _Tally
    ) -> None:
        staged = peer.staged
        if not staged or not peer.usable(now):
            return
        count = min(len(staged), REJECT_AFTER_MESSAGES - peer.counter)
        self._seal(key, peer, [staged.popleft().data for _ in range(count)], out, sent)

    def _seal(
        self,
        key: bytes,
        peer: _SendPeer,
        plaintexts: list[bytes],
        out: list[Action],
        sent: _Tally,
    ) -> None:
        """Seal on the peer's current session, which the caller has checked is usable."""
        endpoint = peer.endpoint
        if endpoint is None:
            self.drops[drops.NO_ENDPOINT] += len(plaintexts)
            return
        keys = peer.keys
        aead = peer.aead
        assert keys is not None and aead is not None
        datagrams = seal(aead, keys.remote_index, peer.counter, plaintexts)
        peer.counter += len(datagrams)
        out.append(TransmitBatch(tuple(datagrams), endpoint))
        tally = sent.get(key)
        if tally is None:
            tally = sent[key] = [0, 0, 0]
        keepalives = plaintexts.count(b"")
        tally[0] += len(datagrams) - keepalives
        tally[1] += keepalives
        tally[2] += sum(map(len, datagrams))

    @staticmethod
    def _report(sent: _Tally, out: list[Action]) -> None:
        for key, (data, keepalives, nbytes) in sent.items():
            out.append(Sent(key, data, keepalives, nbytes))

    # ------------------------------------------------------------------ introspection

    def staged_count(self, key: bytes) -> int:
        peer = self._peers.get(key)
        return len(peer.staged) if peer is not None else 0

    def has_keys(self, key: bytes) -> bool:
        peer = self._peers.get(key)
        return peer is not None and peer.keys is not None
