"""Packets above 1280 bytes from the host (an interface at wg-quick's MTU 1420): IPv4 without
DF is fragmented and must reassemble to the very same bytes; IPv4 with DF and IPv6 are dropped
and answered with ICMP too-big (MTU 1280) at a bounded rate. The same code serves both modes
(``TunDevice.read_batch``); tests/test_live_oversize.py drives it through a real TUN device."""

from __future__ import annotations

import ipaddress
import os
import struct
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ippkt import ipv6, reassemble

from actors import Packet
from actors.icmp import internet_checksum as checksum
from actors.io.tun import (
    HOST_TOO_BIG_BURST,
    HOST_TOO_BIG_PER_SECOND,
    READ_SIZE,
    HostOversize,
    mtu_policy,
)

SRC, DST = "10.66.0.1", "10.66.0.2"
SRC6, DST6 = "fd66::1", "fd66::2"
SIZES = [1281, 1392, 1420]
MF, DF = 0x2000, 0x4000

ROUTER_ALERT = bytes([0x94, 4, 0, 0])  # copy flag set: in every fragment
RECORD_ROUTE = bytes([0x07, 7, 4]) + bytes(4)  # copy flag clear: only in the first
LOOSE_ROUTE = bytes([0x83, 7, 4]) + bytes([10, 66, 0, 9])  # copy flag set


def v4(
    total: int, *, df: bool = False, options: bytes = b"", ident: int = 0x4321, proto: int = 17
) -> bytes:
    """An IPv4 packet of ``total`` bytes with a recognisable payload and a good checksum."""
    options += bytes(-len(options) % 4)
    ihl = 20 + len(options)
    payload = os.urandom(total - ihl)
    fixed = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl // 4,
        0,
        total,
        ident,
        DF if df else 0,
        64,
        proto,
        0,
        ipaddress.IPv4Address(SRC).packed,
        ipaddress.IPv4Address(DST).packed,
    )
    header = bytearray(fixed + options)
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return bytes(header) + payload


def v6(total: int) -> bytes:
    return ipv6(SRC6, DST6, 17, os.urandom(total - 40))


def handle(
    data: bytes, now: float = 0.0, oversize: HostOversize | None = None
) -> tuple[list[Packet], list[Packet], Counter[str], Counter[str]]:
    """(packets passed on, ICMP replies, drops, counts) for one packet read from the TUN."""
    out: list[Packet] = []
    replies: list[Packet] = []
    drops: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    (oversize or HostOversize()).handle(data, now, out, drops, replies, counts)
    return out, replies, drops, counts


@pytest.mark.parametrize("size", SIZES)
def test_ipv4_without_df_is_fragmented_and_reassembles_to_the_same_bytes(size: int) -> None:
    original = v4(size)
    out, replies, drops, counts = handle(original)
    assert replies == [] and drops == Counter()
    datas = [p.data for p in out]
    assert len(datas) == 2
    assert all(len(d) <= 1280 for d in datas)
    assert len(datas[0]) == 1276  # 20 + 1256: the largest multiple of 8 that fits
    assert reassemble(datas) == original
    assert counts == Counter(oversize_fragmented=1, oversize_fragments=2)


@pytest.mark.parametrize("size", SIZES)
def test_options_copied_ones_in_every_fragment_the_rest_in_the_first(size: int) -> None:
    options = ROUTER_ALERT + RECORD_ROUTE + LOOSE_ROUTE
    original = v4(size, options=options)
    out, _, drops, _ = handle(original)
    assert drops == Counter()
    first, *rest = (p.data for p in out)
    assert first[20 : 20 + len(options)] == options
    assert rest
    for f in rest:
        ihl = (f[0] & 0x0F) * 4
        assert f[20:ihl] == ROUTER_ALERT + LOOSE_ROUTE + bytes(1)  # padded to 4 bytes
    assert all(len(p.data) <= 1280 for p in out)
    assert reassemble([p.data for p in out]) == original


def test_malformed_options_still_give_valid_fragments() -> None:
    """An option whose length runs past the header: later fragments keep only what parsed."""
    bad = ROUTER_ALERT + bytes([0x83, 40, 4, 0])
    original = v4(1420, options=bad)
    out, _, drops, _ = handle(original)
    assert drops == Counter() and len(out) == 2
    assert out[1].data[20:24] == ROUTER_ALERT and (out[1].data[0] & 0x0F) == 6
    assert reassemble([p.data for p in out]) == original


def test_a_fragment_from_the_host_is_fragmented_further() -> None:
    """The host may send a fragment itself (IP_PMTUDISC_DONT at a larger MTU): its offset and
    MF flag carry over to the pieces."""
    whole = v4(2 * 1400)
    head = bytearray(whole[:1396])  # 20 + 1376 bytes of payload, MF
    head[2:4] = struct.pack("!H", 1396)
    head[6:8] = struct.pack("!H", MF)
    head[10:12] = b"\0\0"
    head[10:12] = struct.pack("!H", checksum(bytes(head[:20])))
    out, _, _, _ = handle(bytes(head))
    words = [struct.unpack_from("!H", p.data, 6)[0] for p in out]
    assert words == [MF, MF | 1256 // 8]


@pytest.mark.parametrize("size", SIZES)
def test_ipv4_with_df_gets_fragmentation_needed_mtu_1280(size: int) -> None:
    original = v4(size, df=True)
    out, replies, drops, counts = handle(original)
    assert out == [] and drops == Counter(oversize=1) and counts == Counter()
    (reply,) = (r.data for r in replies)
    assert reply[12:16] == original[16:20] and reply[16:20] == original[12:16]
    assert checksum(reply[:20]) == 0 and reply[9] == 1
    icmp = reply[20:]
    assert icmp[:2] == bytes([3, 4])  # destination unreachable: fragmentation needed
    assert checksum(icmp) == 0
    assert struct.unpack_from("!H", icmp, 6)[0] == 1280
    assert icmp[8:] == original[:28]  # the header and 8 bytes of what it refuses


@pytest.mark.parametrize("size", SIZES)
def test_ipv6_gets_packet_too_big_mtu_1280(size: int) -> None:
    original = v6(size)
    out, replies, drops, _ = handle(original)
    assert out == [] and drops == Counter(oversize=1)
    (reply,) = (r.data for r in replies)
    assert reply[6] == 58 and reply[8:24] == original[24:40] and reply[24:40] == original[8:24]
    body = reply[40:]
    assert body[0] == 2 and struct.unpack_from("!I", body, 4)[0] == 1280  # packet too big
    pseudo = reply[8:40] + struct.pack("!I3xB", len(body), 58)
    assert checksum(pseudo + body) == 0
    assert len(reply) <= 1280 and body[8:] == original[: len(body) - 8]


def test_too_big_replies_are_rate_limited() -> None:
    oversize = HostOversize()
    burst = 3 * HOST_TOO_BIG_BURST
    replies = [handle(v4(1392, df=True), 5.0, oversize)[1] for _ in range(burst)]
    assert sum(map(len, replies)) == HOST_TOO_BIG_BURST
    later = 5.0 + 2.5 / HOST_TOO_BIG_PER_SECOND  # time for two more (and half of one)
    replies = [handle(v6(1392), later, oversize)[1] for _ in range(burst)]
    assert sum(map(len, replies)) == 2
    # a dropped packet is counted whether or not it was answered
    assert handle(v6(1392), later, oversize)[2] == Counter(oversize=1)


def test_no_answer_about_an_icmp_error() -> None:
    unreachable = bytes([3, 1, 0, 0, 0, 0, 0, 0])
    data = bytearray(v4(1392, df=True, proto=1))
    data[20:28] = unreachable
    out, replies, drops, _ = handle(bytes(data))
    assert out == [] and replies == [] and drops == Counter(oversize=1)


def test_a_read_cut_short_by_the_buffer_is_still_answered() -> None:
    """An MTU above the read buffer: the packet is lost, but a DF sender still learns 1280."""
    cut = v4(4000, df=True)[:READ_SIZE]
    out, replies, drops, _ = handle(cut)
    assert out == [] and drops == Counter(oversize=1) and len(replies) == 1
    out, replies, drops, _ = handle(v4(4000)[:READ_SIZE])
    assert out == [] and replies == [] and drops == Counter(oversize=1)


@pytest.mark.parametrize(
    "data",
    [
        b"\x45" + bytes(1400),  # a length field of 0
        bytes([0x75]) + bytes(1400),  # IP version 7
        v4(1392)[:2] + struct.pack("!H", 1400) + v4(1392)[4:],  # says more than it holds
        bytes([0x42]) + bytes(1300),  # IHL below 20
    ],
)
def test_nonsense_is_counted_as_invalid(data: bytes) -> None:
    out, replies, drops, _ = handle(data)
    assert out == [] and replies == [] and drops == Counter(invalid_packet=1)


def test_trailing_bytes_past_the_length_field_are_left_out() -> None:
    original = v4(1392)
    out, _, _, _ = handle(original + bytes(8))
    assert reassemble([p.data for p in out]) == original


def test_mtu_policy_says_what_happens_to_larger_packets() -> None:
    assert mtu_policy(1420) == (
        "MTU 1420 on the interface: packets above 1280 are fragmented (IPv4 without DF) or "
        "answered with ICMP too-big"
    )
    assert mtu_policy(1280) == (
        "MTU 1280 on the interface; if raised (wg-quick up sets 1420), packets above 1280 are "
        "fragmented (IPv4 without DF) or answered with ICMP too-big"
    )
    assert mtu_policy(1200).startswith("MTU 1200 on the interface; if raised")
    assert mtu_policy(9000) == (
        "MTU 9000 on the interface: packets above 1280 are fragmented (IPv4 without DF) or "
        "answered with ICMP too-big, but those above 2048 bytes cannot be read whole: IPv4 "
        "without DF is lost (an MTU of 2048 or less avoids it)"
    )
    assert mtu_policy(9000, readable=65535) == mtu_policy(1420).replace("1420", "9000")


@settings(max_examples=300)
@given(
    ihl=st.integers(5, 15),
    options=st.binary(min_size=40, max_size=40),
    word=st.integers(0, 0xFFFF),
    size=st.integers(1281, 3000),
    length_delta=st.integers(-1400, 8),
    proto=st.integers(0, 255),
)
def test_anything_the_host_sends_is_handled_without_raising(
    ihl: int, options: bytes, word: int, size: int, length_delta: int, proto: int
) -> None:
    """A local program may write any IP packet it likes: whatever the header says, the result
    is fragments of at most 1280 bytes that reassemble, or a counted drop."""
    data = bytearray(v4(size, proto=proto))
    data[0] = 0x40 | ihl
    data[20 : ihl * 4] = options[: ihl * 4 - 20]
    struct.pack_into("!HH", data, 2, max(0, size + length_delta), word)
    out, replies, drops, _ = handle(bytes(data))
    assert sum(drops.values()) == (0 if out else 1)
    assert all(len(p.data) <= 1280 for p in out) and len(replies) <= 1
    if out and not word & 0x3FFF:  # a whole datagram in: the same datagram back
        total = struct.unpack_from("!H", data, 2)[0]
        assert reassemble([p.data for p in out])[20:] == bytes(data[20:total])


def test_a_fragment_that_would_end_past_the_largest_datagram_is_a_counted_drop() -> None:
    """Offset 8190 (65520 bytes) plus 1,400 bytes cannot be split: a piece's offset would
    overflow its 13 bits into the flags (MF set where it must not be). Counted, not sent."""
    whole = v4(1420)
    head = bytearray(whole)
    head[6:8] = struct.pack("!H", 8190)  # the last fragment, at the largest offset
    head[10:12] = b"\0\0"
    head[10:12] = struct.pack("!H", checksum(bytes(head[:20])))
    out, _, drops, _ = handle(bytes(head))
    assert out == []
    assert drops["invalid_packet"] == 1
