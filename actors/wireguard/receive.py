"""The receive path: handshake messages and transport data (wireguard-go's receive.go).

Each function takes the device that owns the state (what it needs of the
:class:`~.device.Device`, as a :class:`ReceiveDevice`), the datagram, its source and ``now``,
and appends actions to ``out``. The timer rules fire through the peer's
:class:`~.timers.Timers` in the order wireguard-go calls them, and roaming through
:meth:`~.peer.Peer.set_endpoint_from_packet`, only once a message has authenticated.

:func:`receive_transport` decrypts and delivers one transport message. The fast path for runs
of them (:mod:`.transport`) gives the same results with the same steps: it calls
:func:`transport_authenticated`, :func:`transport_received` and :func:`receive_oversize` through
the device's hooks, and :func:`receive_datagram` for everything else.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from collections.abc import Mapping
from typing import Protocol

from cryptography.exceptions import InvalidTag
from loguru import logger

from ..icmp import too_big_reply
from ..packet import Packet, PacketError
from . import drops
from .actions import (
    Action,
    Deliver,
    Endpoint,
    HandOverDatagram,
    SendKeysUpdate,
    Transmit,
    TunnelReply,
)
from .allowedips import AllowedIPs
from .constants import (
    HANDSHAKE_INITIATION_RATE,
    INITIATION_SIZE,
    MSG_COOKIE_REPLY,
    MSG_INITIATION,
    MSG_RESPONSE,
    MSG_TRANSPORT,
    REJECT_AFTER_TIME,
    REKEY_ON_RECEIVE_AGE,
    RESPONSE_SIZE,
    TRANSPORT_MIN_SIZE,
)
from .cookie import CookieChecker
from .indextable import IndexTable
from .keypair import ReceiveSession
from .load import HandshakeLoad
from .messages import CookieReply, Initiation, MessageError, Response, decode
from .noise import (
    HandshakeError,
    Identity,
    accept_initiation,
    begin_session,
    consume_initiation,
    consume_response,
)
from .oversize import TooBigLimiter, dont_fragment, fragment_v4, oversize_packet, source_address
from .peer import Peer, short_key
from .ratelimiter import RateLimiter

__all__ = [
    "ReceiveDevice",
    "receive_datagram",
    "receive_handshake",
    "receive_oversize",
    "receive_transport",
    "transport_authenticated",
    "transport_received",
]

_TRANSPORT_HEADER = struct.Struct("<IIQ")
_NONCE = struct.Struct("<4xQ")


class ReceiveDevice(Protocol):
    """What the receive path reads and calls on the device that owns its state.

    A protocol, not the :class:`~.device.Device` class, so that device.py can call into this
    module without the two importing each other, and so that this list is all the receive
    path may touch. Members are read-only here: the path changes what they hold (counters,
    indices, sessions), never which object the device holds."""

    @property
    def drops(self) -> Counter[str]: ...

    @property
    def events(self) -> Counter[str]: ...

    @property
    def identity(self) -> Identity | None: ...

    @property
    def checker(self) -> CookieChecker | None: ...

    @property
    def load(self) -> HandshakeLoad: ...

    @property
    def limiter(self) -> RateLimiter: ...

    @property
    def too_big_limiter(self) -> TooBigLimiter: ...

    @property
    def indices(self) -> IndexTable: ...

    @property
    def allowed_ips(self) -> AllowedIPs[bytes]: ...

    @property
    def peer_map(self) -> Mapping[bytes, Peer]: ...

    def handshake_complete(self, peer: Peer, now: float) -> None:
        """A session is confirmed: the timers and the peer's handshake figures."""
        ...

    def send_initiation(self, peer: Peer, now: float, out: list[Action], *, retry: bool) -> None:
        """Start a handshake with ``peer`` (at most one per REKEY_TIMEOUT)."""
        ...

    def send_response(
        self, peer: Peer, source: Endpoint, now: float, out: list[Action]
    ) -> ReceiveSession | None:
        """Answer the initiation just consumed; the session offered, or None if none could be."""
        ...

    def route_of(self, address: bytes) -> bytes | None:
        """The peer an inner source address belongs to, interface-wide (cryptokey routing)."""
        ...

    def owner_elsewhere(self, key: bytes) -> int | None:
        """The other worker that owns peer ``key``, if another does (worker processes)."""
        ...


def receive_datagram(
    device: ReceiveDevice,
    data: bytes,
    source: Endpoint,
    now: float,
    out: list[Action],
    handed_over: bool = False,
) -> None:
    """One datagram from ``source``, of any message type. ``handed_over``: another worker
    read it and passed it here (see :func:`receive_handshake`)."""
    if len(data) < 4 or data[1] or data[2] or data[3]:
        device.drops[drops.MALFORMED] += 1
        return
    kind = data[0]
    if kind == MSG_TRANSPORT:
        receive_transport(device, data, source, now, out)
    elif kind in (MSG_INITIATION, MSG_RESPONSE, MSG_COOKIE_REPLY):
        try:
            msg = decode(data)
        except MessageError:
            device.drops[drops.MALFORMED] += 1
            return
        if isinstance(msg, CookieReply):
            receive_cookie_reply(device, msg, now)
        elif isinstance(msg, Initiation | Response):
            receive_handshake(device, data, msg, source, now, out, handed_over)
    else:
        device.drops[drops.MALFORMED] += 1


# ---------------------------------------------------------------------- transport


def receive_transport(
    device: ReceiveDevice, data: bytes, source: Endpoint, now: float, out: list[Action]
) -> None:
    """Authenticate, replay-check and deliver one transport message (RoutineDecryption and
    RoutineSequentialReceiver in one)."""
    if len(data) < TRANSPORT_MIN_SIZE:
        device.drops[drops.MALFORMED] += 1
        return
    _, receiver, counter = _TRANSPORT_HEADER.unpack_from(data)
    entry = device.indices.lookup(receiver)
    if entry is None or (session := entry[1]) is None:
        device.drops[drops.UNKNOWN_INDEX] += 1
        return
    peer = entry[0]
    if now - session.keypair.created >= REJECT_AFTER_TIME:
        device.drops[drops.EXPIRED_SESSION] += 1
        return
    if not session.replay.check(counter):
        device.drops[drops.REPLAY] += 1
        return
    try:
        plaintext = session.aead.decrypt(_NONCE.pack(counter), memoryview(data)[16:], None)
    except InvalidTag:
        device.drops[drops.BAD_TAG] += 1
        return
    if not session.replay.update(counter):
        device.drops[drops.REPLAY] += 1
        return
    # Authenticated from here on.
    peer.set_endpoint_from_packet(source, out)
    peer.stats.rx_bytes += len(data)
    transport_authenticated(device, peer, session, now, out)
    if not plaintext:
        device.events["keepalives_received"] += 1
        return
    peer.timers.data_received(now)
    try:
        packet = Packet.from_padded(plaintext, peer.key)
    except PacketError:
        receive_oversize(device, peer, plaintext, now, out)
        return
    if device.route_of(packet.src_bytes) != peer.key:
        device.drops[drops.SOURCE_NOT_ALLOWED] += 1
        return
    out.append(Deliver(packet, peer.key))


def transport_authenticated(
    device: ReceiveDevice, peer: Peer, session: ReceiveSession, now: float, out: list[Action]
) -> None:
    """What an authenticated transport message does to the session and the timers: confirm a
    responder's session, renew an ageing one, restart the keepalive and handshake timers.

    Repeating it for later messages on the same session at the same ``now`` changes nothing
    (the first call took the session out of ``next``; the last-minute flag is set, or the age
    test fails again; the timers get the same values), so the fast path calls it once per run."""
    if session is peer.next:
        _confirm_next(device, peer, now, out)
    _keep_key_fresh_receiving(device, peer, now, out)
    timers = peer.timers
    timers.any_authenticated_packet_traversal(now, peer.config.persistent_keepalive)
    timers.any_authenticated_packet_received()


def transport_received(
    device: ReceiveDevice, peer: Peer, nbytes: int, data: int, keepalives: int, now: float
) -> None:
    """A run's totals: ``nbytes`` of authenticated datagrams, of which ``data`` carried a
    packet and ``keepalives`` were empty. The data-received timer event happens once per data
    packet; from the second on it only sets the same flag again, so two calls stand for any
    number."""
    peer.stats.rx_bytes += nbytes
    if keepalives:
        device.events["keepalives_received"] += keepalives
    for _ in range(min(data, 2)):
        peer.timers.data_received(now)


def receive_oversize(
    device: ReceiveDevice, peer: Peer, plaintext: bytes, now: float, out: list[Action]
) -> None:
    """An inner packet above our MTU: fragment it, or drop it and say so (see .oversize)."""
    packet = oversize_packet(plaintext)
    if packet is None:
        device.drops[drops.BAD_INNER_PACKET] += 1
        return
    if device.route_of(source_address(packet)) != peer.key:
        device.drops[drops.SOURCE_NOT_ALLOWED] += 1
        return
    if not dont_fragment(packet):
        try:
            fragments = fragment_v4(packet, peer=peer.key)
        except ValueError:
            device.drops[drops.BAD_INNER_PACKET] += 1
            return
        out.extend(Deliver(f, peer.key) for f in fragments)
        device.events["inner_packets_fragmented"] += 1
        return
    device.drops[drops.INNER_TOO_BIG] += 1
    if device.too_big_limiter.allow(now):
        reply = too_big_reply(packet)
        if reply is not None:
            out.append(TunnelReply(reply))
            device.events["too_big_replies"] += 1


def _confirm_next(device: ReceiveDevice, peer: Peer, now: float, out: list[Action]) -> None:
    """The initiator used the session we offered as responder: it becomes current."""
    old = peer.previous
    if old is not None:
        device.indices.delete(old.local_index)
    peer.previous = peer.current
    peer.current = peer.next
    peer.next = None
    device.handshake_complete(peer, now)
    assert peer.current is not None
    if not peer.current.sending_expired:  # else the send side already holds no keys
        out.append(SendKeysUpdate(peer.key, peer.current.keypair.sending(peer.key)))


def _keep_key_fresh_receiving(
    device: ReceiveDevice, peer: Peer, now: float, out: list[Action]
) -> None:
    """The initiator renews a session it receives on before the responder must reject it."""
    if peer.timers.sent_last_minute_handshake:
        return
    current = peer.current
    if (
        current is not None
        and current.keypair.is_initiator
        and now - current.created > REKEY_ON_RECEIVE_AGE
    ):
        peer.timers.sent_last_minute_handshake = True
        device.send_initiation(peer, now, out, retry=False)


# ---------------------------------------------------------------------- handshakes


def receive_handshake(
    device: ReceiveDevice,
    data: bytes,
    msg: Initiation | Response,
    source: Endpoint,
    now: float,
    out: list[Action],
    handed_over: bool = False,
) -> None:
    """mac1, then (under load only) mac2 and the per-source rate limit, then the message.

    A message ``handed_over`` by the worker that read it passed that worker's load checks,
    against its own cookie secret: checking mac2 again here, against another secret, would
    answer the peer's every retry with a new cookie. Nor is it handed on again: two workers
    whose directories disagree must not pass an initiation back and forth."""
    checker = device.checker
    if checker is None or device.identity is None:
        device.drops[drops.NO_PRIVATE_KEY] += 1
        return
    if not checker.check_mac1(data):
        device.drops[drops.BAD_MAC1] += 1
        return
    load = device.load
    if not handed_over and load.under_load(now):
        src = _source_bytes(source)
        if src is None:
            device.drops[drops.MALFORMED] += 1
            return
        if not checker.check_mac2(data, src, now):
            reply = checker.create_reply(data, msg.sender, src, now)
            out.append(Transmit(reply, source))
            device.drops[drops.COOKIE_SENT] += 1
            return
        if not device.limiter.allow(src[:-2], now):
            device.drops[drops.RATE_LIMITED] += 1
            return
    load.worked(now)
    if isinstance(msg, Initiation):
        _receive_initiation(device, data, msg, source, now, out, handed_over)
    else:
        _receive_response(device, msg, source, now, out)


def _receive_initiation(
    device: ReceiveDevice,
    data: bytes,
    msg: Initiation,
    source: Endpoint,
    now: float,
    out: list[Action],
    handed_over: bool,
) -> None:
    assert device.identity is not None
    try:
        consumed = consume_initiation(device.identity, msg)
    except HandshakeError:
        device.drops[drops.BAD_HANDSHAKE] += 1
        return
    peer = device.peer_map.get(consumed.remote_static)
    if peer is None:
        owner = None if handed_over else device.owner_elsewhere(consumed.remote_static)
        if owner is None:
            device.drops[drops.UNKNOWN_PEER] += 1
            return
        # Only the initiation travels, not what consuming it learnt: the owner repeats the
        # Diffie-Hellman, once per handshake, and no secret leaves this worker.
        out.append(HandOverDatagram(owner, data, source))
        device.events["initiations_handed_over"] += 1
        return
    hs = peer.handshake
    if hs.static_static is None:
        device.drops[drops.BAD_HANDSHAKE] += 1
        return
    if consumed.timestamp <= hs.last_timestamp:
        device.drops[drops.STALE_TIMESTAMP] += 1
        return
    last = peer.last_initiation_consumed
    if last is not None and now - last <= HANDSHAKE_INITIATION_RATE:
        device.drops[drops.INITIATION_FLOOD] += 1
        return
    peer.last_initiation_consumed = now
    accept_initiation(hs, consumed)
    peer.stats.rx_bytes += INITIATION_SIZE  # as wireguard-go: once the message is valid
    peer.timers.any_authenticated_packet_traversal(now, peer.config.persistent_keepalive)
    peer.timers.any_authenticated_packet_received()
    peer.set_endpoint_from_packet(source, out)
    session = device.send_response(peer, source, now, out)
    if session is None:
        return
    # As responder the new session waits in `next` until the initiator uses it.
    for old in (peer.next, peer.previous):
        if old is not None:
            device.indices.delete(old.local_index)
    peer.next = session
    peer.previous = None
    device.events["initiations_answered"] += 1
    logger.debug("handshake initiation from {} answered", short_key(peer.key))


def _receive_response(
    device: ReceiveDevice, msg: Response, source: Endpoint, now: float, out: list[Action]
) -> None:
    entry = device.indices.lookup(msg.receiver)
    if entry is None or entry[1] is not None:
        device.drops[drops.UNKNOWN_INDEX] += 1
        return
    peer = entry[0]
    assert device.identity is not None
    try:
        consume_response(device.identity, peer.handshake, msg)
    except HandshakeError:
        device.drops[drops.BAD_HANDSHAKE] += 1
        return
    peer.stats.rx_bytes += RESPONSE_SIZE
    peer.set_endpoint_from_packet(source, out)
    peer.timers.any_authenticated_packet_traversal(now, peer.config.persistent_keepalive)
    peer.timers.any_authenticated_packet_received()
    keypair = begin_session(peer.handshake, now)
    new_session = ReceiveSession(keypair)
    device.indices.swap_for_session(keypair.local_index, peer, new_session)
    # As initiator the new session is current at once; the old current becomes previous.
    demoted: ReceiveSession | None
    if peer.next is not None:
        if peer.current is not None:
            device.indices.delete(peer.current.local_index)
        demoted = peer.next
        peer.next = None
    else:
        demoted = peer.current
    if peer.previous is not None and peer.previous is not demoted:
        device.indices.delete(peer.previous.local_index)
    peer.previous = demoted
    peer.current = new_session
    peer.timers.session_derived(now)
    device.handshake_complete(peer, now)
    out.append(SendKeysUpdate(peer.key, keypair.sending(peer.key), confirm=True))
    device.events["responses_consumed"] += 1
    logger.debug("handshake with {} complete (initiator)", short_key(peer.key))


def receive_cookie_reply(device: ReceiveDevice, msg: CookieReply, now: float) -> None:
    entry = device.indices.lookup(msg.receiver)
    if entry is None:
        device.drops[drops.UNKNOWN_INDEX] += 1
        return
    if not entry[0].cookies.consume_reply(msg, now):
        device.drops[drops.BAD_COOKIE] += 1
        return
    device.events["cookies_received"] += 1


def _source_bytes(endpoint: Endpoint) -> bytes | None:
    """The bytes a cookie is bound to: the source address and port."""
    host, port = endpoint
    try:
        packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except (OSError, ValueError):
        return None
    return packed + port.to_bytes(2, "big")
