"""Every timer rule of whitepaper section 6 on a fake clock: minutes of protocol in milliseconds."""

from __future__ import annotations

import itertools

from wgsim import A_TUN4, B_TUN4, Sim, count_type, udp4

from actors.wireguard import drops
from actors.wireguard.constants import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    MSG_INITIATION,
    MSG_TRANSPORT,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
)


def initiation_times(sim: Sim, sender: str = "A") -> list[float]:
    return [t for t, name, data in sim.timed_log if name == sender and data[0] == MSG_INITIATION]


def test_retransmit_with_jitter_then_give_up_and_drop_staged() -> None:
    sim = Sim()
    sim.link = lambda node, data: None  # B is unreachable
    start = sim.now
    sim.send(sim.a, udp4(A_TUN4, B_TUN4))
    sim.advance(200)
    times = initiation_times(sim)
    # the first attempt plus MAX_TIMER_HANDSHAKES + 1 retries, as wireguard-go does
    assert len(times) == MAX_TIMER_HANDSHAKES + 2
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(REKEY_TIMEOUT <= g <= REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX for g in gaps)
    assert len(set(gaps)) > 1  # jittered, not a fixed period
    assert times[-1] - start >= REKEY_ATTEMPT_TIME
    assert sim.a.tunnel.encryptor.staged_count(sim.b.public) == 0
    assert sim.a.tunnel.encryptor.drops[drops.STAGED_EXPIRED] == 1


def test_initiations_are_rate_limited_to_one_per_rekey_timeout() -> None:
    sim = Sim()
    sim.link = lambda node, data: None
    for _ in range(50):
        sim.send(sim.a, udp4(A_TUN4, B_TUN4))
        sim.now += 0.05
    assert count_type(sim.log, "A", MSG_INITIATION) == 1


def test_passive_keepalive_after_data_received() -> None:
    sim = Sim()
    sim.handshake()
    t0 = sim.now
    sim.advance(KEEPALIVE_TIMEOUT + 1)
    keepalives = [
        t
        for t, n, d in sim.timed_log
        if n == "B" and d[0] == MSG_TRANSPORT and len(d) == 32 and t > t0
    ]
    assert len(keepalives) == 1
    assert abs(keepalives[0] - (t0 + KEEPALIVE_TIMEOUT)) < 1e-6


def test_no_keepalive_when_we_replied_with_data() -> None:
    sim = Sim()
    sim.handshake()
    sim.now += 1
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"reply"))
    sim.flush()
    t0 = sim.now
    sim.advance(KEEPALIVE_TIMEOUT + 1)
    from_b = [t for t, n, d in sim.timed_log if n == "B" and d[0] == MSG_TRANSPORT and t > t0]
    assert from_b == []


def test_new_handshake_when_data_sent_gets_no_answer() -> None:
    sim = Sim()
    sim.handshake()
    sim.advance(30)  # settle keepalives
    sim.link = lambda node, data: None if node is sim.b else data  # B's replies are lost
    t0 = sim.now
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"anyone?"))
    sim.flush()
    sim.advance(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 1)
    times = [t for t in initiation_times(sim) if t > t0]
    assert len(times) == 1
    delay = times[0] - t0
    assert (
        KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
        <= delay
        <= (KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX)
    )


def test_initiator_rekeys_after_time_on_send() -> None:
    sim = Sim()
    sim.handshake()
    sim.advance(REKEY_AFTER_TIME - 1)
    sim.send(sim.a, udp4(A_TUN4, B_TUN4))
    sim.flush()
    assert len(initiation_times(sim)) == 1
    sim.advance(2)
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"fresh"))
    sim.flush()
    assert len(initiation_times(sim)) == 2
    assert sim.a.tunnel.device.peer_stats(sim.b.public).handshakes == 2
    assert bytes(sim.b.delivered[-1])[28:] == b"fresh"


def test_responder_does_not_rekey_on_send_age() -> None:
    sim = Sim()
    sim.handshake()
    sim.advance(REKEY_AFTER_TIME + 5)
    sim.send(sim.b, udp4(B_TUN4, A_TUN4))
    sim.flush()
    assert initiation_times(sim, "B") == []


def test_initiator_rekeys_when_receiving_on_an_old_session() -> None:
    sim = Sim()
    sim.handshake()
    age = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
    sim.advance(age + 1)
    before = len(initiation_times(sim))
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"old session"))
    sim.flush()
    assert len(initiation_times(sim)) == before + 1


def test_reject_after_time_stops_sending_and_receiving() -> None:
    sim = Sim()
    sim.handshake()
    captured = [d for n, d in sim.log if n == "A" and d[0] == MSG_TRANSPORT]
    sim.link = lambda node, data: None  # no new handshake can complete
    sim.advance(REJECT_AFTER_TIME + 1)
    sim.log.clear()
    sim.send(sim.a, udp4(A_TUN4, B_TUN4))
    assert count_type(sim.log, "A", MSG_TRANSPORT) == 0  # staged, not sent on a dead key
    assert sim.a.tunnel.encryptor.staged_count(sim.b.public) == 1
    # B refuses anything on the expired session too (a fresh counter, so not a replay)
    sim.link = lambda node, data: data
    dev_b = sim.b.tunnel.device
    assert captured
    before = dev_b.drops[drops.EXPIRED_SESSION]
    sim.inject(sim.b, captured[0], sim.a.endpoint)
    assert dev_b.drops[drops.EXPIRED_SESSION] == before + 1


def test_keys_zeroed_after_three_reject_times() -> None:
    sim = Sim()
    sim.handshake()
    sim.link = lambda node, data: None
    sim.advance(3 * REJECT_AFTER_TIME - 10)
    assert sim.a.tunnel.encryptor.has_keys(sim.b.public)
    sim.advance(20)
    assert not sim.a.tunnel.encryptor.has_keys(sim.b.public)
    assert not sim.b.tunnel.encryptor.has_keys(sim.a.public)
    assert sim.a.tunnel.device.events["keys_zeroed"] == 1
    assert sim.a.tunnel.device.index_count() == 0
    assert sim.b.tunnel.device.index_count() == 0


def test_persistent_keepalive_interval() -> None:
    sim = Sim(keepalive_b=25)
    sim.handshake()
    sim.advance(5)
    t0 = sim.now
    sim.advance(100)
    ka = [t for t, n, d in sim.timed_log if n == "B" and d[0] == MSG_TRANSPORT and t > t0]
    gaps = [b - a for a, b in itertools.pairwise(ka)]
    assert len(ka) >= 3
    assert all(abs(g - 25) < 1e-6 for g in gaps)


def test_persistent_keepalive_starts_the_handshake() -> None:
    sim = Sim(keepalive_a=25)
    sim.advance(0.1)
    assert sim.a.tunnel.device.peer_stats(sim.b.public).handshakes == 1
    assert sim.b.tunnel.device.peer_stats(sim.a.public).handshakes == 1


def test_rekey_after_messages_and_reject_after_messages() -> None:
    sim = Sim()
    sim.handshake()
    enc = sim.a.tunnel.encryptor
    peer = enc._peers[sim.b.public]
    sim.advance(30)  # past the 5 s spacing of initiations; the session is quiet and young
    peer.counter = REKEY_AFTER_MESSAGES + 1
    before = len(initiation_times(sim))
    sim.send(sim.a, udp4(A_TUN4, B_TUN4))
    assert len(initiation_times(sim)) == before + 1
    assert count_type(sim.log, "A", MSG_TRANSPORT) >= 2  # the packet itself still went out
    peer.counter = REJECT_AFTER_MESSAGES
    sim.log.clear()
    sim.send(sim.a, udp4(A_TUN4, B_TUN4))
    assert count_type(sim.log, "A", MSG_TRANSPORT) == 0
    assert enc.staged_count(sim.b.public) == 1


def test_ten_minutes_of_traffic_keeps_rekeying() -> None:
    sim = Sim()
    sim.handshake()
    for i in range(600):
        sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"a%d" % i))
        sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"b%d" % i))
        sim.flush()
        sim.advance(1)
    assert len(sim.b.delivered) == 601
    assert len(sim.a.delivered) == 600
    hs = sim.a.tunnel.device.peer_stats(sim.b.public).handshakes
    assert 5 <= hs <= 6  # one every REKEY_AFTER_TIME (120 s), initiated by A
    # the previous session is kept for in-flight packets; nothing older lingers
    assert sim.a.tunnel.device.index_count() <= 3
