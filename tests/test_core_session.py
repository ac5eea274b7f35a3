"""Two protocol cores in memory: handshake, data both ways, and every check on the way in."""

from __future__ import annotations

import random

import pytest
from wgsim import A_EP, A_TUN4, A_TUN6, B_EP, B_TUN4, B_TUN6, Sim, count_type, udp4, udp6

from actors.wireguard import PeerConfig, Tunnel, drops
from actors.wireguard.constants import (
    COOKIE_REPLY_SIZE,
    INITIATION_SIZE,
    MSG_COOKIE_REPLY,
    MSG_INITIATION,
    MSG_RESPONSE,
    MSG_TRANSPORT,
    REKEY_TIMEOUT,
    RESPONSE_SIZE,
)
from actors.wireguard.crypto import public_key


@pytest.mark.parametrize("psk", [None, bytes(range(32))])
def test_handshake_and_data_both_ways(psk: bytes | None) -> None:
    sim = Sim(psk_a=psk, psk_b=psk)
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"one"))
    sim.flush()
    # initiation, response, then the staged packet; B confirms nothing yet
    assert count_type(sim.log, "A", MSG_INITIATION, INITIATION_SIZE) == 1
    assert count_type(sim.log, "B", MSG_RESPONSE, RESPONSE_SIZE) == 1
    assert [bytes(p)[28:] for p in sim.b.delivered] == [b"one"]
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"two"))
    sim.send(sim.b, udp6(B_TUN6, A_TUN6, b"three"))
    sim.send(sim.a, udp6(A_TUN6, B_TUN6, b"four"))
    sim.flush()
    assert [p.version for p in sim.a.delivered] == [4, 6]
    assert bytes(sim.a.delivered[0])[28:] == b"two"
    assert bytes(sim.a.delivered[1])[48:] == b"three"
    assert str(sim.a.delivered[1].src) == B_TUN6
    assert bytes(sim.b.delivered[-1])[48:] == b"four"
    # exactly one handshake happened
    assert count_type(sim.log, "A", MSG_INITIATION) == 1
    assert count_type(sim.log, "B", MSG_INITIATION) == 0
    assert sim.a.tunnel.device.peer_stats(sim.b.public).handshakes == 1
    assert sim.b.tunnel.device.peer_stats(sim.a.public).handshakes == 1


def test_mismatched_psk_never_completes() -> None:
    sim = Sim(psk_a=bytes(32), psk_b=b"\x01" * 32)
    sim.handshake()
    assert sim.b.delivered == []
    assert sim.a.tunnel.device.drops[drops.BAD_HANDSHAKE] == 1


def test_transport_padding_and_keepalive_size() -> None:
    sim = Sim()
    sim.handshake()
    sim.log.clear()
    for n in (0, 1, 15, 16, 17, 100):
        sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"x" * n))
    sim.flush()
    sizes = [len(d) for name, d in sim.log if name == "A" and d[0] == MSG_TRANSPORT]
    inner = [28 + n for n in (0, 1, 15, 16, 17, 100)]
    assert sizes == [32 + (-(-i // 16) * 16) for i in inner]
    # a keepalive is an empty payload: header + tag only
    sim.log.clear()
    sim.advance(10.5)  # B received data and sent none: passive keepalive
    keepalives = [d for name, d in sim.log if name == "B" and d[0] == MSG_TRANSPORT]
    assert keepalives and all(len(d) == 32 for d in keepalives)


def test_replayed_transport_is_dropped() -> None:
    sim = Sim()
    sim.handshake()
    captured = [d for name, d in sim.log if name == "A" and d[0] == MSG_TRANSPORT]
    assert captured
    before = len(sim.b.delivered)
    for data in captured:
        sim.inject(sim.b, data, A_EP)
    assert len(sim.b.delivered) == before
    assert sim.b.tunnel.device.drops[drops.REPLAY] == len(captured)


def test_tampered_transport_is_dropped_and_does_not_roam() -> None:
    sim = Sim()
    sim.handshake()
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"z"))
    data = sim.in_flight.pop()[1]
    forged = data[:-1] + bytes([data[-1] ^ 1])
    sim.inject(sim.b, forged, ("198.51.100.7", 4444))
    assert sim.b.tunnel.device.drops[drops.BAD_TAG] == 1
    assert sim.b.tunnel.device.peer_endpoint(sim.a.public) == A_EP
    # the genuine packet still gets in afterwards: the forgery did not touch the window
    sim.inject(sim.b, data, A_EP)
    assert bytes(sim.b.delivered[-1])[28:] == b"z"


def test_roaming_follows_authenticated_packets_only() -> None:
    sim = Sim()
    sim.handshake()
    new_home = ("203.0.113.9", 40000)
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"moved"))
    data = sim.in_flight.pop()[1]
    sim.inject(sim.b, data, new_home)
    assert sim.b.tunnel.device.peer_endpoint(sim.a.public) == new_home
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"reply"))
    assert sim.in_flight[-1][2] == new_home


def test_inner_source_outside_allowed_ips_is_dropped() -> None:
    sim = Sim()
    sim.handshake()
    sim.send(sim.b, udp4("10.9.0.99", A_TUN4, b"spoof"))  # B routes by dst; A checks src
    sim.flush()
    assert sim.a.delivered == []
    assert sim.a.tunnel.device.drops[drops.SOURCE_NOT_ALLOWED] == 1


def test_no_route_is_counted() -> None:
    sim = Sim()
    sim.send(sim.a, udp4(A_TUN4, "10.200.0.1"))
    assert sim.a.tunnel.encryptor.drops[drops.NO_ROUTE] == 1
    assert sim.in_flight == []


def test_replayed_initiation_is_refused() -> None:
    sim = Sim()
    sim.send(sim.a, udp4(A_TUN4, B_TUN4))
    initiation = sim.in_flight[0][1]
    sim.flush()
    sim.now += 1
    sim.inject(sim.b, initiation, A_EP)
    assert sim.b.tunnel.device.drops[drops.STALE_TIMESTAMP] == 1


def test_initiation_rate_per_peer() -> None:
    """Two valid, fresh initiations from the same peer 10 ms apart: the second is refused."""
    rng = random.Random(5)
    ka = rng.randbytes(32)
    kb = rng.randbytes(32)
    b = Tunnel(kb, [PeerConfig(public_key(ka), allowed_ips=("10.0.0.1/32",))], rng=rng.randbytes)
    a1 = Tunnel(
        ka,
        [PeerConfig(public_key(kb), endpoint=B_EP, allowed_ips=("10.0.0.2/32",))],
        rng=rng.randbytes,
    )
    a2 = Tunnel(
        ka,
        [PeerConfig(public_key(kb), endpoint=B_EP, allowed_ips=("10.0.0.2/32",))],
        rng=rng.randbytes,
    )
    i1 = a1.send(udp4("10.0.0.1", "10.0.0.2"), 100.0, 1.7e9)[0].data
    i2 = a2.send(udp4("10.0.0.1", "10.0.0.2"), 100.0, 1.7e9 + 1)[0].data
    assert len(b.receive(i1, A_EP, 100.0, 1.7e9)) == 1  # answered
    assert b.receive(i2, A_EP, 100.01, 1.7e9) == []
    assert b.device.drops[drops.INITIATION_FLOOD] == 1
    assert (
        len(b.receive(i2, A_EP, 100.2, 1.7e9)) == 1
    )  # same message, later: accepted (newer stamp)


def test_bad_mac1_and_unknown_peer() -> None:
    sim = Sim()
    sim.send(sim.a, udp4(A_TUN4, B_TUN4))
    initiation = sim.in_flight.pop()[1]
    bad = initiation[:116] + bytes([initiation[116] ^ 1]) + initiation[117:]
    sim.inject(sim.b, bad, A_EP)
    assert sim.b.tunnel.device.drops[drops.BAD_MAC1] == 1
    # a stranger who knows B's public key (so mac1 is right) but is not B's peer
    stranger = Tunnel(
        b"\x07" * 32, [PeerConfig(sim.b.public, endpoint=B_EP, allowed_ips=("10.9.0.2/32",))]
    )
    out = stranger.send(udp4("10.9.0.7", B_TUN4), sim.now, sim.wall())
    sim.inject(sim.b, out[0].data, ("198.51.100.1", 1))
    assert sim.b.tunnel.device.drops[drops.UNKNOWN_PEER] == 1
    assert sim.in_flight == []


def test_responses_and_cookies_to_nobody_are_dropped() -> None:
    sim = Sim()
    sim.handshake()
    response = next(d for n, d in sim.log if n == "B" and d[0] == MSG_RESPONSE)
    sim.inject(sim.a, response, B_EP)  # already consumed: its index now names a session
    fake_cookie = bytes([3, 0, 0, 0]) + b"\xee" * 60
    sim.inject(sim.a, fake_cookie, B_EP)
    assert sim.a.tunnel.device.drops[drops.UNKNOWN_INDEX] == 2


def test_under_load_cookie_round_trip() -> None:
    sim = Sim()
    sim.b.tunnel.device.under_load_threshold = 0  # every handshake message counts as load
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"after cookie"))
    sim.flush()
    assert count_type(sim.log, "B", MSG_COOKIE_REPLY, COOKIE_REPLY_SIZE) == 1
    assert sim.b.tunnel.device.drops[drops.COOKIE_SENT] == 1
    assert sim.a.tunnel.device.events["cookies_received"] == 1
    assert sim.b.delivered == []
    # the retransmission carries mac2 and is accepted despite the load
    sim.advance(REKEY_TIMEOUT + 0.5)
    assert [bytes(p)[28:] for p in sim.b.delivered] == [b"after cookie"]
    assert count_type(sim.log, "B", MSG_COOKIE_REPLY) == 1


def test_under_load_rate_limits_a_source_with_valid_cookie() -> None:
    sim = Sim()
    dev_b = sim.b.tunnel.device
    dev_b.under_load_threshold = 0
    sim.handshake()  # cookie reply
    sim.advance(REKEY_TIMEOUT + 0.5)  # handshake with mac2
    assert dev_b.peer_stats(sim.a.public).handshakes == 1
    # replay the mac2-carrying initiation many times: the rate limiter stops it first
    initiation = [d for n, d in sim.log if n == "A" and d[0] == MSG_INITIATION][-1]
    for _ in range(30):
        sim.inject(sim.b, initiation, A_EP)
    assert dev_b.drops[drops.RATE_LIMITED] > 0
    assert dev_b.drops[drops.RATE_LIMITED] + dev_b.drops[drops.STALE_TIMESTAMP] == 30


def test_staged_packets_flow_after_handshake_in_order() -> None:
    sim = Sim()
    for i in range(10):
        sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"p%d" % i))
    assert sim.a.tunnel.encryptor.staged_count(sim.b.public) == 10
    assert count_type(sim.log, "A", MSG_INITIATION) == 1  # one handshake for all of them
    sim.flush()
    assert [bytes(p)[28:] for p in sim.b.delivered] == [b"p%d" % i for i in range(10)]


def test_staging_is_bounded() -> None:
    sim = Sim()
    sim.link = lambda node, data: None
    limit = sim.a.tunnel.encryptor.max_staged
    for i in range(limit + 7):
        sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"%d" % i))
    assert sim.a.tunnel.encryptor.staged_count(sim.b.public) == limit
    assert sim.a.tunnel.encryptor.drops[drops.STAGED_OVERFLOW] == 7


def test_responder_without_endpoint_learns_it() -> None:
    sim = Sim(b_knows_a_endpoint=False)
    sim.send(sim.b, udp4(B_TUN4, A_TUN4))  # B cannot initiate: no endpoint
    assert sim.b.tunnel.device.drops[drops.NO_ENDPOINT] == 1
    sim.handshake()
    assert sim.b.tunnel.device.peer_endpoint(sim.a.public) == A_EP
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"back"))
    sim.flush()
    assert bytes(sim.a.delivered[-1])[28:] == b"back"


def test_simultaneous_initiation_converges() -> None:
    sim = Sim()
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"from a"))
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"from b"))
    sim.flush()
    sim.advance(30)
    sim.send(sim.a, udp4(A_TUN4, B_TUN4, b"later a"))
    sim.send(sim.b, udp4(B_TUN4, A_TUN4, b"later b"))
    sim.flush()
    assert b"later a" in [bytes(p)[28:] for p in sim.b.delivered]
    assert b"later b" in [bytes(p)[28:] for p in sim.a.delivered]


def test_many_peers_routed_by_allowed_ips() -> None:
    rng = random.Random(9)
    hub_key = rng.randbytes(32)
    spokes = [rng.randbytes(32) for _ in range(20)]
    hub = Tunnel(
        hub_key,
        [
            PeerConfig(
                public_key(k),
                endpoint=(f"192.0.2.{i + 10}", 51820),
                allowed_ips=(f"10.50.{i}.0/24",),
            )
            for i, k in enumerate(spokes)
        ],
        rng=rng.randbytes,
    )
    spoke_tunnels = [
        Tunnel(
            k,
            [
                PeerConfig(
                    public_key(hub_key), endpoint=("192.0.2.1", 51820), allowed_ips=("0.0.0.0/0",)
                )
            ],
            rng=rng.randbytes,
        )
        for k in spokes
    ]
    by_endpoint = {(f"192.0.2.{i + 10}", 51820): t for i, t in enumerate(spoke_tunnels)}
    now, wall = 50.0, 1.7e9
    got: dict[int, list[bytes]] = {}
    pending = []
    for i in (3, 17, 3):
        pending += [
            (a, i) for a in hub.send(udp4("10.1.1.1", f"10.50.{i}.5", b"to %d" % i), now, wall)
        ]
    for _ in range(100):
        if not pending:
            break
        action, _i = pending.pop(0)
        spoke = by_endpoint[action.endpoint]
        idx = spoke_tunnels.index(spoke)
        for out in spoke.receive(action.data, ("192.0.2.1", 51820), now, wall):
            if hasattr(out, "packet"):
                got.setdefault(idx, []).append(bytes(out.packet)[28:])
            else:
                for back in hub.receive(out.data, action.endpoint, now, wall):
                    if hasattr(back, "data"):
                        pending.append((back, idx))
    assert got == {3: [b"to 3", b"to 3"], 17: [b"to 17"]}
