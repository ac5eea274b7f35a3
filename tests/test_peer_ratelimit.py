"""PeerRateLimit: a token bucket per authenticated peer, at arrival time, with a fake clock
(exact token arithmetic: every figure below is a power of two or a whole number)."""

from __future__ import annotations

import pytest

from actors import Packet, build
from actors.contrib import ratelimit
from actors.contrib.ratelimit import MAX_PACKET_SIZE, PeerRateLimit, parse_rate, parse_size
from actors.testing import FakeClock, StageRunner

A, B = bytes(range(32)), bytes(range(1, 33))
SIZE = 500  # bytes per test packet


def from_peer(peer: bytes, size: int = SIZE) -> Packet:
    p = build.udp("10.0.0.1", "10.0.0.2", 1, 2, bytes(size - 28))
    assert len(p.data) == size
    return Packet(p.data, peer)


def test_units() -> None:
    assert parse_rate(8000) == 8000 and parse_rate("10mbit") == 10_000_000
    assert parse_rate("500kbit") == 500_000 and parse_rate("1gbit") == 10**9
    assert parse_rate("1.5 Mbit") == 1_500_000
    assert parse_size(2048) == 2048 and parse_size("64kb") == 65536 and parse_size("1m") == 1 << 20
    for bad in ("10mbps", "fast", "", "-1mbit", 0):
        with pytest.raises(ValueError, match="rate"):
            parse_rate(bad)
    with pytest.raises(TypeError):
        parse_rate(True)
    with pytest.raises(ValueError, match="burst"):
        parse_size(100)  # smaller than one full packet


def test_a_peer_gets_its_burst_then_the_rate_exactly() -> None:
    clock = FakeClock(0.0)
    # 8000 bit/s = 1000 bytes/s; a bucket of 1500 bytes holds three 500-byte packets
    with StageRunner((PeerRateLimit, {"rate": 8000, "burst": 1500}), clock=clock) as runner:
        first = runner.feed([from_peer(A)] * 4)
        assert len(first.passed) == 3 and first.drops == {"rate_bytes": 1}
        clock.advance(0.25)  # 250 bytes: not enough
        assert runner.feed([from_peer(A)]).drops == {"rate_bytes": 1}
        clock.advance(0.25)  # 500 bytes now
        assert len(runner.feed([from_peer(A)] * 2).passed) == 1
        clock.advance(100.0)  # refills to the burst, not beyond
        assert len(runner.feed([from_peer(A)] * 4).passed) == 3
        stats = runner.stats()["peerratelimit"]
    assert stats["rate_passed"] == 7 and stats["rate_limited"] == 4
    assert stats["drops"] == {"rate_bytes": 4} and stats["rate_peers"] == 1


def test_peers_have_buckets_of_their_own() -> None:
    clock = FakeClock(0.0)
    with StageRunner((PeerRateLimit, {"rate": 8000, "burst": 1280}), clock=clock) as runner:
        result = runner.feed([from_peer(A)] * 5 + [from_peer(B)] * 2)
    assert [p.peer for p in result.passed] == [A, A, B, B]


def test_the_packet_bucket() -> None:
    clock = FakeClock(0.0)
    spec = (PeerRateLimit, {"rate": "1gbit", "packets": 2})
    with StageRunner(spec, clock=clock) as runner:
        assert runner.feed([from_peer(A)] * 3).drops == {"rate_packets": 1}
        clock.advance(0.5)  # one packet's worth
        assert len(runner.feed([from_peer(A)] * 2).passed) == 1


def test_time_is_the_batchs_arrival_not_the_processing() -> None:
    """Two batches stamped at the same time share the same tokens, however late the stage
    gets to the second one."""
    clock = FakeClock(0.0)
    with StageRunner(
        (PeerRateLimit, {"rate": 8000, "burst": 1280}), clock=clock, batch_size=1
    ) as runner:
        assert len(runner.feed([from_peer(A)] * 3).passed) == 2  # three batches, one time


def test_outbound_uses_the_route_and_unrouted_packets_pass() -> None:
    clock = FakeClock(0.0)
    routes = {"10.0.0.0/24": A}
    spec = (PeerRateLimit, {"rate": 8000, "burst": 1280})
    with StageRunner(spec, clock=clock, routes=routes, path="outbound") as runner:
        to_a = build.udp("10.0.1.1", "10.0.0.2", 1, 2, bytes(SIZE - 28))
        nowhere = build.udp("10.0.1.1", "10.9.0.2", 1, 2, bytes(SIZE - 28))
        result = runner.feed([to_a] * 3 + [nowhere] * 3)
    assert result.passed == [to_a, to_a] + [nowhere] * 3
    assert result.stats["peerratelimit"]["rate_no_peer"] == 3


def test_default_burst_and_bad_options() -> None:
    assert PeerRateLimit(rate="10mbit").burst == 10_000_000 / 8 * 0.05
    assert PeerRateLimit(rate=8000).burst == 2 * MAX_PACKET_SIZE
    with pytest.raises(ValueError, match="packets"):
        PeerRateLimit(rate=8000, packets=0)
    with pytest.raises(ValueError, match="rate"):
        PeerRateLimit(rate="10 furlongs")


def test_the_table_of_peers_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_PEERS", 4)
    peers = [bytes([i]) * 32 for i in range(6)]
    with StageRunner((PeerRateLimit, {"rate": 8000}), clock=FakeClock()) as runner:
        result = runner.feed([from_peer(p) for p in peers])
    stats = result.stats["peerratelimit"]
    assert stats["rate_peers"] == 4 and stats["rate_evicted"] == 2
