"""The fast path for transport messages: a run of packets on one session at a time.

Data packets come in runs: a stage's batch of datagrams mostly carries one peer's session, and a
batch of outbound packets mostly goes to one peer. Everything that does not change inside a run
is done once per run: the receiver-index look-up, the key-age check, the timers, the peer's
statistics, the action that carries the result. What is left per packet is the work each packet
really needs: its header, the replay window, one ChaCha20-Poly1305 call, and (inbound) the inner
packet's validation and source check, with the last source's route remembered. That is how the
core stays near the cipher's own cost. (wireguard-go's receive path, too, groups a read batch
by peer and hands each peer its elements as one container.)

Both directions are sans-I/O like the rest of the core. :func:`seal` frames and encrypts, and
:func:`receive_batch` authenticates and delivers; the owners keep their state: the
:class:`~.encryptor.Encryptor` its counters, and the receive side (a :class:`ReceiveOwner`)
its sessions, peers and timers, told what a run did through a few hooks.

The per-packet results are the same as one-at-a-time processing gives, drop reasons included,
and so are the actions, in the same order once expanded: a run's packets leave as one
:class:`~.actions.DeliverBatch` or :class:`~.actions.TransmitBatch` (split where a hook adds an
action of its own, such as a new endpoint or a fragmented packet), and :func:`expand` turns
those back into one action per packet for callers that want that.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..packet import Packet
from . import drops as reasons
from .actions import Action, Deliver, DeliverBatch, Endpoint, Transmit, TransmitBatch
from .constants import (
    MSG_TRANSPORT,
    PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
    TRANSPORT_MIN_SIZE,
)
from .keypair import ReceiveSession

__all__ = ["ReceiveOwner", "ReceivePeer", "expand", "receive_batch", "seal"]

_HEADER = struct.Struct("<IIQ")  # type (with the three reserved zero bytes), receiver, counter
_NONCE = struct.Struct("<4xQ")
_HEADER_SIZE = _HEADER.size
_PADDING = [bytes(n) for n in range(PADDING_MULTIPLE)]


class ReceivePeer(Protocol):
    """What the fast path reads from a peer of the receive side."""

    @property
    def key(self) -> bytes: ...

    @property
    def endpoint(self) -> Endpoint | None: ...


P = TypeVar("P", bound=ReceivePeer)


class ReceiveOwner(Protocol[P]):
    """The receive side's owner (the :class:`~.device.Device`), as the fast path sees it.

    The hooks are called once per run, except two for the rare packet: :meth:`transport_roamed`
    when an authenticated packet comes from somewhere else than the peer's endpoint, and
    :meth:`transport_oversize_or_malformed` when its plaintext is not a packet the run can
    deliver as it is."""

    drops: Counter[str]

    def transport_session(self, receiver: int) -> tuple[P, ReceiveSession] | None:
        """The session a receiver index names, with its peer; None if none (or a handshake)."""
        ...

    def transport_fresh(self, session: ReceiveSession, now: float) -> bool:
        """Whether the session may still receive (REJECT_AFTER_TIME)."""
        ...

    def transport_authenticated(
        self, peer: P, session: ReceiveSession, now: float, out: list[Action]
    ) -> None:
        """The run's first packet passed authentication and the replay window (after
        :meth:`transport_roamed`, if it roamed): confirm a responder's session, renew an ageing
        one, the timers of an authenticated packet."""
        ...

    def transport_roamed(self, peer: P, source: Endpoint, out: list[Action]) -> None:
        """An authenticated packet came from ``source``: the peer's endpoint moves there."""
        ...

    def transport_received(
        self, peer: P, nbytes: int, data: int, keepalives: int, now: float
    ) -> None:
        """A run's totals: bytes of its authenticated datagrams, data packets and keepalives."""
        ...

    def transport_oversize_or_malformed(
        self, peer: P, plain: bytes, now: float, out: list[Action]
    ) -> None:
        """An authenticated plaintext that :meth:`~actors.packet.Packet.unpad` refused: above
        the MTU, or no valid IP header. The owner decides (fragment it, answer it, count it)."""
        ...

    def route_of(self, address: bytes) -> bytes | None:
        """The peer a raw inner source address routes to (cryptokey routing)."""
        ...

    def receive_non_transport(
        self, data: bytes, source: Endpoint, now: float, out: list[Action]
    ) -> None:
        """A datagram that is not a full-size transport message (handshakes, cookies, junk),
        for the one-at-a-time path."""
        ...


def receive_batch(
    owner: ReceiveOwner[P], datagrams: Iterable[tuple[bytes, Endpoint]], now: float
) -> list[Action]:
    """Process a batch of datagrams in order, transport runs through the fast path."""
    batch = datagrams if isinstance(datagrams, list | tuple) else list(datagrams)
    out: list[Action] = []
    unpack = _HEADER.unpack_from
    i, n = 0, len(batch)
    while i < n:
        data, source = batch[i]
        if len(data) >= TRANSPORT_MIN_SIZE:
            kind, receiver, _ = unpack(data)
            if kind == MSG_TRANSPORT:
                entry = owner.transport_session(receiver)
                if entry is None:
                    owner.drops[reasons.UNKNOWN_INDEX] += 1
                    i += 1
                elif not owner.transport_fresh(entry[1], now):
                    owner.drops[reasons.EXPIRED_SESSION] += 1
                    i += 1
                else:
                    i = _open_run(owner, entry[0], entry[1], receiver, batch, i, now, out)
                continue
        owner.receive_non_transport(data, source, now, out)
        i += 1
    return out


def _open_run(
    owner: ReceiveOwner[P],
    peer: P,
    session: ReceiveSession,
    receiver: int,
    batch: Sequence[tuple[bytes, Endpoint]],
    i: int,
    now: float,
    out: list[Action],
) -> int:
    """Authenticate and deliver the transport messages for ``receiver`` from ``batch[i]`` on,
    up to the first datagram that is something else; returns that datagram's index."""
    unpack = _HEADER.unpack_from
    nonce = _NONCE.pack
    decrypt = session.aead.decrypt
    replay = session.replay
    check = replay.check
    update = replay.update
    record = replay.update_run
    newest = replay.newest
    drops = owner.drops
    route_of = owner.route_of
    unpad = Packet.unpad
    key = peer.key
    endpoint = peer.endpoint
    delivered: list[Packet] = []
    authenticated = False
    nbytes = keepalives = data_packets = 0
    last_source = b""
    source_allowed = False
    # In-order counters (above the newest recorded) are recorded as consecutive runs after the
    # loop, [pending, pending_end), instead of one window update each.
    pending = pending_end = -1
    stop = len(batch)
    # Module constants as locals: this loop is the core's hottest.
    min_size, transport, limit, header_size = (
        TRANSPORT_MIN_SIZE,
        MSG_TRANSPORT,
        REJECT_AFTER_MESSAGES,
        _HEADER_SIZE,
    )
    try:
        for j in range(i, stop):
            data, source = batch[j]
            if len(data) < min_size:
                stop = j
                break
            kind, index, counter = unpack(data)
            if kind != transport or index != receiver:
                stop = j
                break
            if newest < counter < limit:
                # New for sure: nothing at or above it has been seen.
                try:
                    plain = decrypt(nonce(counter), data[header_size:], None)
                except InvalidTag:
                    drops[reasons.BAD_TAG] += 1
                    continue
                newest = counter
                if counter != pending_end:
                    if pending >= 0:
                        record(pending, pending_end - 1)
                    pending = counter
                pending_end = counter + 1
            else:
                if pending >= 0:  # the window must know the run so far before judging this
                    record(pending, pending_end - 1)
                    pending = pending_end = -1
                if not check(counter):
                    drops[reasons.REPLAY] += 1
                    continue
                try:
                    plain = decrypt(nonce(counter), data[header_size:], None)
                except InvalidTag:
                    drops[reasons.BAD_TAG] += 1
                    continue
                if not update(counter):
                    drops[reasons.REPLAY] += 1
                    continue
            # Authenticated from here on. Roaming comes first, as in the one-at-a-time path;
            # whatever a hook adds to ``out`` goes after the packets delivered before it.
            if source is not endpoint:  # the receiver hands out one tuple per source
                if source != endpoint:
                    if delivered:
                        out.append(DeliverBatch(tuple(delivered), key))
                        delivered = []
                    owner.transport_roamed(peer, source, out)
                endpoint = source
            if not authenticated:
                authenticated = True
                owner.transport_authenticated(peer, session, now, out)
            nbytes += len(data)
            if not plain:
                keepalives += 1
                continue
            data_packets += 1
            packet = unpad(plain, key)
            if packet is None:
                if delivered:
                    out.append(DeliverBatch(tuple(delivered), key))
                    delivered = []
                owner.transport_oversize_or_malformed(peer, plain, now, out)
                continue
            src = plain[12:16] if plain[0] >> 4 == 4 else plain[8:24]
            if src != last_source:
                last_source = src
                source_allowed = route_of(src) == key
            if not source_allowed:
                drops[reasons.SOURCE_NOT_ALLOWED] += 1
                continue
            delivered.append(packet)
    finally:
        if pending >= 0:
            record(pending, pending_end - 1)
    if authenticated:
        owner.transport_received(peer, nbytes, data_packets, keepalives, now)
    if delivered:
        out.append(DeliverBatch(tuple(delivered), key))
    return stop


def seal(
    aead: ChaCha20Poly1305, remote_index: int, counter: int, plaintexts: Iterable[bytes]
) -> list[bytes]:
    """Transport messages for ``plaintexts`` on one session, counters from ``counter`` on.

    The caller owns the counter: it checks the limits before, and adds how many it got back."""
    encrypt = aead.encrypt
    nonce = _NONCE.pack
    header = _HEADER.pack
    padding = _PADDING
    sealed: list[bytes] = []
    for plain in plaintexts:
        pad = -len(plain) % PADDING_MULTIPLE
        if pad:
            plain += padding[pad]
        sealed.append(
            header(MSG_TRANSPORT, remote_index, counter) + encrypt(nonce(counter), plain, None)
        )
        counter += 1
    return sealed


def expand(actions: list[Action]) -> list[Action]:
    """The same actions with each batch as one action per packet (Transmit, Deliver)."""
    if not any(type(a) is TransmitBatch or type(a) is DeliverBatch for a in actions):
        return actions
    out: list[Action] = []
    for action in actions:
        if type(action) is TransmitBatch:
            endpoint = action.endpoint
            out += [Transmit(d, endpoint) for d in action.datagrams]
        elif type(action) is DeliverBatch:
            peer = action.peer
            out += [Deliver(p, peer) for p in action.packets]
        else:
            out.append(action)
    return out
