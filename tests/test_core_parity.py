"""Issue 22 item 7: where the core still differed from wireguard-go and the kernel, on a fake clock.

* A private-key change stops sending on every session but keeps receiving on them until they
  expire (wireguard-go's ExpireCurrentKeypairs, the kernel's
  wg_noise_expire_current_peer_keypairs).
* The transfer counters count every datagram attributable to a peer, handshake messages
  included, as sent and received on the wire; a handshake message that fails validation, and
  cookie replies either way, count nothing (wireguard-go's RoutineHandshake and SendBuffers).
* Every entry point that can start a handshake takes the wall time, and the initiation it
  starts carries it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
from wgsim import A_EP, A_TUN4, B_EP, B_TUN4, Sim, udp4

from actors.wireguard import Deliver, Transmit, drops
from actors.wireguard.actions import Action, HandshakeWanted, SendKeepalive, TransmitBatch
from actors.wireguard.constants import (
    COOKIE_REPLY_SIZE,
    INITIATION_SIZE,
    MSG_COOKIE_REPLY,
    MSG_INITIATION,
    MSG_RESPONSE,
    MSG_TRANSPORT,
    REJECT_AFTER_TIME,
    REKEY_ON_RECEIVE_AGE,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    RESPONSE_SIZE,
    TIMESTAMP_WHITENING_NS,
)
from actors.wireguard.crypto import tai64n_to_ns
from actors.wireguard.device import Device
from actors.wireguard.messages import Initiation, decode
from actors.wireguard.noise import consume_initiation
from actors.wireguard.tunnel import Tunnel

NEW_KEY = bytes(range(1, 33))
PINGS = 5


def kinds(sim: Sim, name: str) -> list[int]:
    return [d[0] for n, d in sim.log if n == name]


def in_flight_from(sim: Sim, name: str) -> list[bytes]:
    """Take what ``name`` has in flight off the network, unsent."""
    taken = [d for node, d, _ in sim.in_flight if node.name == name]
    sim.in_flight = [f for f in sim.in_flight if f[0].name != name]
    return taken


def rekey(sim: Sim, tunnel: Tunnel) -> None:
    tunnel.apply(lambda d: d.set_private_key(NEW_KEY), sim.now, sim.wall())


# ---------------------------------------------------------------------- private-key change


def test_private_key_change_keeps_receiving_on_the_current_session() -> None:
    """A changes its key while B keeps sending on the session they have: A still receives
    (it used to drop everything as unknown_index), sends nothing on that session, starts a
    handshake at the first packet it has to send, and the session ends by the usual rules."""
    sim = Sim()
    sim.handshake()
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"before"))
    sim.flush()
    replayed = sim.b.sent[-1]
    device = sim.a.tunnel.device
    indices = device.index_count()
    rekey(sim, sim.a.tunnel)
    assert device.index_count() == indices  # the sessions' indices stay

    sim.now += 1
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"after"))
    sim.flush()
    assert [bytes(p)[28:] for p in sim.a.delivered] == [b"before", b"after"]
    assert device.drops[drops.UNKNOWN_INDEX] == 0
    # the replay window is the session's own: an old message is still a replay
    sim.inject(sim.a, replayed, B_EP)
    assert device.drops[drops.REPLAY] == 1

    # A's answer is not sent on the session: it waits, and a handshake starts at once
    sent_before = len(sim.log)
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"answer"))
    assert [d[0] for n, d in sim.log[sent_before:] if n == "A"] == [MSG_INITIATION]
    assert sim.a.tunnel.encryptor.staged_count(sim.b.public) == 1
    sim.flush()  # B does not know A's new key: that handshake goes nowhere
    assert sim.b.tunnel.device.drops[drops.UNKNOWN_PEER] == 1
    assert MSG_TRANSPORT not in [d[0] for n, d in sim.log[sent_before:] if n == "A"]

    # B keeps sending until its session is too old for it; A receives until the same age
    created = device.peer_map[sim.b.public].current
    assert created is not None
    age = sim.now - created.created
    sim.advance(REJECT_AFTER_TIME - age - 2)
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"late"))
    late = in_flight_from(sim, "B")
    assert [d[0] for d in late] == [MSG_TRANSPORT]
    sim.inject(sim.a, late[0], B_EP)
    assert bytes(sim.a.delivered[-1])[28:] == b"late"
    sim.advance(3)
    sim.inject(sim.a, late[0], B_EP)
    assert device.drops[drops.EXPIRED_SESSION] == 1
    sim.advance(3 * REJECT_AFTER_TIME)  # then the keys are zeroed with their indices
    assert device.index_count() == 0


def test_private_key_change_on_the_responder_confirms_but_never_sends_on_its_session() -> None:
    """B answered A's initiation and then changed its key: A's first packet on the new
    session still arrives and confirms it, but B does not send on it."""
    sim = Sim()
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"first"))
    (initiation,) = in_flight_from(sim, "A")
    sim.inject(sim.b, initiation, A_EP)
    rekey(sim, sim.b.tunnel)
    sim.flush()  # the response reaches A; A sends its staged packet on the new session
    assert [bytes(p)[28:] for p in sim.b.delivered] == [b"first"]
    device = sim.b.tunnel.device
    peer = device.peer_map[sim.a.public]
    assert peer.current is not None and peer.next is None
    assert not sim.b.tunnel.encryptor.has_keys(sim.a.public)
    mark = len(sim.log)
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"reply"))
    assert [d[0] for n, d in sim.log[mark:] if n == "B"] == [MSG_INITIATION]


# ---------------------------------------------------------------------- transfer counters


def wire_bytes(sim: Sim, name: str, kind: int | None = None) -> int:
    return sum(len(d) for n, d in sim.log if n == name and (kind is None or d[0] == kind))


def transfer(sim: Sim, node_name: str) -> tuple[int, int]:
    node = sim.a if node_name == "A" else sim.b
    (state,) = node.tunnel.device.peer_states()
    return state.rx_bytes, state.tx_bytes


def test_transfer_counters_count_every_datagram_on_the_wire() -> None:
    """One handshake, pings both ways, keepalives: each side's tx is what it put on the wire
    and its rx what the other did (it used to leave the 148 + 92 bytes of handshake out)."""
    sim = Sim()
    sim.handshake()
    for i in range(PINGS):
        sim.now += 1
        sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"ping %d" % i))
        sim.flush()
        sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"pong %d" % i))
        sim.flush()
    sim.advance(30)  # passive keepalives
    assert kinds(sim, "A").count(MSG_INITIATION) == 1
    assert kinds(sim, "B").count(MSG_RESPONSE) == 1
    a_rx, a_tx = transfer(sim, "A")
    b_rx, b_tx = transfer(sim, "B")
    assert a_tx == wire_bytes(sim, "A") == b_rx
    assert b_tx == wire_bytes(sim, "B") == a_rx
    assert wire_bytes(sim, "A", MSG_INITIATION) == INITIATION_SIZE
    assert wire_bytes(sim, "B", MSG_RESPONSE) == RESPONSE_SIZE
    print(f"\n[parity] initiator rx/tx {a_rx}/{a_tx}, responder rx/tx {b_rx}/{b_tx}")


def test_handshake_messages_that_fail_count_nothing() -> None:
    """A tampered initiation, a replayed one and a response to nobody cost the peer's
    counters nothing; an accepted initiation and response count in full."""
    sim = Sim()
    sim.send(sim.a, udp4(A_TUN4, B_TUN4))
    (initiation,) = in_flight_from(sim, "A")
    tampered = initiation[:20] + bytes([initiation[20] ^ 1]) + initiation[21:]
    sim.inject(sim.b, tampered, A_EP)  # mac1 fails
    assert transfer(sim, "B") == (0, 0)
    sim.inject(sim.b, initiation, A_EP)
    assert transfer(sim, "B") == (INITIATION_SIZE, RESPONSE_SIZE)
    (response,) = in_flight_from(sim, "B")
    sim.now += 1
    sim.inject(sim.b, initiation, A_EP)  # replayed: stale timestamp
    assert sim.b.tunnel.device.drops[drops.STALE_TIMESTAMP] == 1
    assert transfer(sim, "B") == (INITIATION_SIZE, RESPONSE_SIZE)
    tampered = response[:12] + bytes([response[12] ^ 1]) + response[13:]
    rx, tx = transfer(sim, "A")
    sim.inject(sim.a, tampered, B_EP)
    assert transfer(sim, "A") == (rx, tx)
    sim.inject(sim.a, response, B_EP)
    assert transfer(sim, "A")[0] == rx + RESPONSE_SIZE


def test_cookie_replies_count_nothing_either_way() -> None:
    """Under load B answers the first initiation with a cookie reply: neither B's tx nor A's rx
    counts it (it is sent before the peer is known), and the initiation it refused is not
    B's rx; A's two initiations are A's tx."""
    sim = Sim()
    sim.b.tunnel.device.under_load_threshold = 0
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"through"))
    sim.flush()
    assert kinds(sim, "B") == [MSG_COOKIE_REPLY]
    assert wire_bytes(sim, "B") == COOKIE_REPLY_SIZE
    assert transfer(sim, "B") == (0, 0)
    assert transfer(sim, "A") == (0, INITIATION_SIZE)
    sim.advance(REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX)  # the retry carries mac2
    assert [bytes(p)[28:] for p in sim.b.delivered] == [b"through"]
    a_rx, a_tx = transfer(sim, "A")
    b_rx, b_tx = transfer(sim, "B")
    assert a_tx == wire_bytes(sim, "A") == b_rx + INITIATION_SIZE
    assert b_tx == wire_bytes(sim, "B") - COOKIE_REPLY_SIZE == a_rx


# ---------------------------------------------------------------------- wall time


WALL = 1.9e9 + 0.123  # far from the Sim's own UNIX time, so the stamp shows where it came from
Trigger = Callable[[Sim], list[Action]]


def _send(sim: Sim) -> list[Action]:
    return list(sim.a.tunnel.send(udp4(A_TUN4, B_TUN4), sim.now, WALL))


def _send_many(sim: Sim) -> list[Action]:
    return list(sim.a.tunnel.send_many([udp4(A_TUN4, B_TUN4)], sim.now, WALL))


def _send_batch(sim: Sim) -> list[Action]:
    return list(sim.a.tunnel.send_batch([udp4(A_TUN4, B_TUN4)], sim.now, WALL))


def _apply(sim: Sim) -> list[Action]:
    # a change whose actions ask the send side for a keepalive: with no session, a handshake
    return list(sim.a.tunnel.apply(lambda d: [SendKeepalive(sim.b.public)], sim.now, WALL))


def _lost_first_initiation(sim: Sim) -> None:
    sim.send(sim.a, udp4(A_TUN4, B_TUN4))
    in_flight_from(sim, "A")
    sim.now += REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX


def _tunnel_update_timers(sim: Sim) -> list[Action]:
    _lost_first_initiation(sim)
    return list(sim.a.tunnel.update_timers(sim.now, WALL))


def _device_update_timers(sim: Sim) -> list[Action]:
    _lost_first_initiation(sim)
    return sim.a.tunnel.device.update_timers(sim.now, WALL)


def _device_handle(sim: Sim) -> list[Action]:
    return sim.a.tunnel.device.handle(HandshakeWanted(sim.b.public), sim.now, WALL)


def _old_session_message(sim: Sim) -> bytes:
    """A transport message from B on a session A initiated long enough ago that receiving on
    it makes A renew it (keepKeyFreshReceiving)."""
    sim.handshake()
    sim.advance(REKEY_ON_RECEIVE_AGE + 1)
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"old session"))
    (message,) = in_flight_from(sim, "B")
    return message


def _tunnel_receive(sim: Sim) -> list[Action]:
    data = _old_session_message(sim)
    return list(sim.a.tunnel.receive(data, B_EP, sim.now, WALL))


def _tunnel_receive_many(sim: Sim) -> list[Action]:
    data = _old_session_message(sim)
    return list(sim.a.tunnel.receive_many([(data, B_EP)], sim.now, WALL))


def _tunnel_receive_batch(sim: Sim) -> list[Action]:
    data = _old_session_message(sim)
    return list(sim.a.tunnel.receive_batch([(data, B_EP)], sim.now, WALL))


def _device_receive(sim: Sim) -> list[Action]:
    data = _old_session_message(sim)
    return sim.a.tunnel.device.receive(data, B_EP, sim.now, WALL)


def _device_receive_many(sim: Sim) -> list[Action]:
    data = _old_session_message(sim)
    return sim.a.tunnel.device.receive_many([(data, B_EP)], sim.now, WALL)


def _device_receive_batch(sim: Sim) -> list[Action]:
    data = _old_session_message(sim)
    return sim.a.tunnel.device.receive_batch([(data, B_EP)], sim.now, WALL)


ENTRY_POINTS: list[tuple[Callable[..., object], Trigger]] = [
    (Tunnel.send, _send),
    (Tunnel.send_many, _send_many),
    (Tunnel.send_batch, _send_batch),
    (Tunnel.apply, _apply),
    (Tunnel.update_timers, _tunnel_update_timers),
    (Tunnel.receive, _tunnel_receive),
    (Tunnel.receive_many, _tunnel_receive_many),
    (Tunnel.receive_batch, _tunnel_receive_batch),
    (Device.update_timers, _device_update_timers),
    (Device.handle, _device_handle),
    (Device.receive, _device_receive),
    (Device.receive_many, _device_receive_many),
    (Device.receive_batch, _device_receive_batch),
]


def initiations_in(actions: list[Action]) -> list[bytes]:
    out: list[bytes] = []
    for action in actions:
        if isinstance(action, Transmit):
            out.append(action.data)
        elif isinstance(action, TransmitBatch):
            out += action.datagrams
        else:
            assert isinstance(action, Deliver) or not hasattr(action, "data")
    return [d for d in out if d[0] == MSG_INITIATION]


@pytest.mark.parametrize(
    ("entry", "trigger"), ENTRY_POINTS, ids=[e.__qualname__ for e, _ in ENTRY_POINTS]
)
def test_an_initiation_carries_the_wall_time_of_its_entry_point(
    entry: Callable[..., object], trigger: Trigger
) -> None:
    """The wall time is a required argument (an initiation stamped with the monotonic clock,
    1970 plus the uptime, is refused as stale), and it is the one the initiation carries."""
    wall = inspect.signature(entry).parameters["wall"]
    assert wall.default is inspect.Parameter.empty
    assert wall.annotation in (float, "float")
    sim = Sim()
    (message,) = initiations_in(trigger(sim))
    msg = decode(message)
    assert isinstance(msg, Initiation)
    identity = sim.b.tunnel.device.identity
    assert identity is not None
    stamp_ns = tai64n_to_ns(consume_initiation(identity, msg).timestamp)
    assert 0 <= int(WALL * 1e9) - stamp_ns < TIMESTAMP_WHITENING_NS
