"""Per-source token buckets of actors/wireguard/ratelimiter.py, driven by a fake clock."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.wireguard.constants import (
    RATELIMIT_BURST,
    RATELIMIT_MAX_SOURCES,
    RATELIMIT_PACKETS_PER_SECOND,
)
from actors.wireguard.ratelimiter import RateLimiter


def v4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


A = v4("192.0.2.1")
B = v4("192.0.2.2")


def drain(rl: RateLimiter, addr: bytes, now: float) -> int:
    """How many allowances ``addr`` gets at ``now`` before the first refusal (capped)."""
    for n in range(1000):
        if not rl.allow(addr, now):
            return n
    raise AssertionError("never refused")


def test_defaults() -> None:
    rl = RateLimiter()
    assert rl.rate == RATELIMIT_PACKETS_PER_SECOND == 20
    assert rl.burst == RATELIMIT_BURST == 5
    assert rl.max_sources == RATELIMIT_MAX_SOURCES
    assert len(rl) == 0


def test_new_source_gets_burst_then_refused() -> None:
    rl = RateLimiter()
    for _ in range(5):
        assert rl.allow(A, 0.0)
    assert not rl.allow(A, 0.0)
    assert not rl.allow(A, 0.0)
    assert len(rl) == 1


def test_refill_at_rate() -> None:
    rl = RateLimiter()
    assert drain(rl, A, 0.0) == 5
    assert not rl.allow(A, 0.025)  # half a token
    assert rl.allow(A, 0.05)  # 1/20 s later: one more
    assert not rl.allow(A, 0.05)
    assert rl.allow(A, 0.10)
    assert not rl.allow(A, 0.10)


def test_refill_accumulates_fractions() -> None:
    rl = RateLimiter()
    assert drain(rl, A, 0.0) == 5
    # refused attempts at a quarter token each do not lose the partial refill
    assert not rl.allow(A, 0.0125)
    assert not rl.allow(A, 0.025)
    assert not rl.allow(A, 0.0375)
    assert rl.allow(A, 0.0625)  # 1.25 tokens accumulated
    assert not rl.allow(A, 0.0625)


def test_refill_caps_at_burst() -> None:
    rl = RateLimiter()
    assert drain(rl, A, 0.0) == 5
    # after a long idle time the bucket is full, but no fuller than burst
    assert drain(rl, A, 1000.0) == 5
    assert drain(rl, A, 1000.1) == 2  # 0.1 s * 20/s


def test_sustained_rate() -> None:
    rl = RateLimiter()
    allowed = 0
    # 200 attempts per second for 10 s: about burst + rate * 10 get through
    for i in range(2000):
        if rl.allow(A, i / 200):
            allowed += 1
    assert 5 + 20 * 10 - 2 <= allowed <= 5 + 20 * 10 + 1


def test_sources_independent() -> None:
    rl = RateLimiter()
    assert drain(rl, A, 0.0) == 5
    assert drain(rl, B, 0.0) == 5
    assert not rl.allow(A, 0.0)
    assert len(rl) == 2


def test_ipv4_sources_are_single_addresses() -> None:
    rl = RateLimiter()
    assert drain(rl, v4("10.0.0.1"), 0.0) == 5
    assert drain(rl, v4("10.0.0.2"), 0.0) == 5
    assert drain(rl, v4("10.0.1.1"), 0.0) == 5


def test_ipv6_same_slash64_shares_bucket() -> None:
    rl = RateLimiter()
    a1 = v6("2001:db8:1:2::1")
    a2 = v6("2001:db8:1:2:ffff:ffff:ffff:ffff")
    a3 = v6("2001:db8:1:2:abcd::9")
    for _ in range(3):
        assert rl.allow(a1, 0.0)
    assert rl.allow(a2, 0.0)
    assert rl.allow(a3, 0.0)
    assert not rl.allow(a1, 0.0)
    assert not rl.allow(a2, 0.0)
    assert not rl.allow(a3, 0.0)
    assert len(rl) == 1


def test_ipv6_different_slash64_independent() -> None:
    rl = RateLimiter()
    assert drain(rl, v6("2001:db8:1:2::1"), 0.0) == 5
    assert drain(rl, v6("2001:db8:1:3::1"), 0.0) == 5  # neighbouring /64
    assert drain(rl, v6("2001:db8:1:2::1")[:7] + b"\x01" + bytes(8), 0.0) == 5
    assert drain(rl, v6("3001:db8:1:2::1"), 0.0) == 5
    assert len(rl) == 4


def test_ipv4_and_ipv4_mapped_v6_distinct() -> None:
    rl = RateLimiter()
    assert drain(rl, v4("10.0.0.1"), 0.0) == 5
    assert drain(rl, v6("::ffff:10.0.0.1"), 0.0) == 5


def test_table_bounded() -> None:
    rl = RateLimiter(max_sources=4)
    sources = [v4(f"198.51.100.{i}") for i in range(1, 5)]
    for s in sources:
        assert rl.allow(s, 0.0)
    assert len(rl) == 4
    newcomer = v4("198.51.100.200")
    # every bucket is busy (touched just now): the fifth source is refused, not added
    assert not rl.allow(newcomer, 0.0)
    assert not rl.allow(newcomer, 0.1)
    assert len(rl) == 4
    # known sources still work while the table is full
    assert rl.allow(sources[0], 0.1)
    # after the buckets have had time to refill the sweep frees room
    later = 0.1 + rl.burst / rl.rate + 0.01
    assert rl.allow(newcomer, later)
    assert len(rl) <= 4
    assert drain(rl, newcomer, later) == 4


def test_table_bound_with_busy_and_idle_sources() -> None:
    rl = RateLimiter(max_sources=4)
    idle = [v4("203.0.113.1"), v4("203.0.113.2")]
    busy = [v4("203.0.113.3"), v4("203.0.113.4")]
    for s in idle + busy:
        assert rl.allow(s, 0.0)
    full_after = rl.burst / rl.rate
    t = full_after + 0.05
    for s in busy:
        rl.allow(s, t - 0.1)  # touched recently
    # the sweep drops only the idle ones
    assert rl.allow(v4("203.0.113.5"), t)
    assert len(rl) == 3
    assert rl.allow(v4("203.0.113.6"), t)
    assert len(rl) == 4
    assert not rl.allow(v4("203.0.113.7"), t)
    assert len(rl) == 4


def test_sweep_forgets_only_full_buckets() -> None:
    rl = RateLimiter()
    rl.allow(A, 0.0)
    rl.allow(B, 1.0)
    rl.sweep(0.2)
    assert len(rl) == 2
    rl.sweep(1.1)  # A idle for 1.1 s >= 0.25 s; B idle for 0.1 s
    assert len(rl) == 1
    # B kept its state: it already spent one token
    assert drain(rl, B, 1.0) == 4
    # A was forgotten, and returns with a full bucket
    assert drain(rl, A, 1.1) == 5


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 50)),  # (source, time step in ms)
        max_size=150,
    )
)
def test_never_exceeds_bound_and_budget(events: list[tuple[int, int]]) -> None:
    rl = RateLimiter(max_sources=4)
    now_ms = 0
    allowed: dict[int, list[int]] = {}
    for src, step in events:
        now_ms += step
        if rl.allow(bytes([10, 0, 0, src]), now_ms / 1000):
            allowed.setdefault(src, []).append(now_ms)
        assert len(rl) <= 4
    # no source ever beats the token bucket: in any interval of d ms, at most burst + rate*d
    for times in allowed.values():
        for i in range(len(times)):
            for j in range(i, len(times)):
                d = (times[j] - times[i]) / 1000
                assert j - i + 1 <= 5 + 20 * d + 1e-9
