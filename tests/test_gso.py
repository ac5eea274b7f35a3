"""TUN offload codec: checksums, GSO splitting and GRO coalescing, against a word-by-word
reference checksum and a model of what the kernel does with the frames we write."""

from __future__ import annotations

import os
import struct

import pytest

from actors.checksum import finish, ones_sum
from actors.io.gso import (
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    MAX_SEGMENTS,
    NEEDS_CSUM,
    PLAIN_HEADER,
    GsoError,
    coalesce,
    split,
)
from actors.packet import MAX_PACKET_SIZE, Packet
from tests.ippkt import ipv4, ipv6

V4 = ("10.9.0.1", "10.9.0.2")
V6 = ("fd00:9::1", "fd00:9::2")
HDR = struct.Struct("<BBHHHH")


def ref_sum(data: bytes) -> int:
    """RFC 1071 the slow way: 16-bit words with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo(pkt: bytes, proto: int) -> bytes:
    if pkt[0] >> 4 == 4:
        l4 = (pkt[0] & 15) * 4
        return pkt[12:20] + bytes((0, proto)) + struct.pack(">H", len(pkt) - l4)
    return pkt[8:40] + struct.pack(">IxxxB", len(pkt) - 40, proto)


def l4_ok(pkt: bytes) -> bool:
    v6 = pkt[0] >> 4 == 6
    l4 = 40 if v6 else (pkt[0] & 15) * 4
    proto = pkt[6] if v6 else pkt[9]
    if not v6 and ref_sum(pkt[:l4]) != 0xFFFF:
        return False
    return ref_sum(pseudo(pkt, proto) + pkt[l4:]) == 0xFFFF


def tcp_seg(
    ver: int, seq: int, payload: bytes, flags: int = 0x10, opts: bytes = b"", ack=7
) -> bytes:
    doff = (20 + len(opts)) // 4
    hdr = struct.pack(">HHIIBBHHH", 40000, 5201, seq, ack, doff << 4, flags, 512, 0, 0) + opts
    seg = hdr + payload
    build = ipv4 if ver == 4 else ipv6
    src, dst = V4 if ver == 4 else V6
    pkt = build(src, dst, 6, seg)
    l4 = 20 if ver == 4 else 40
    csum = 0xFFFF - ref_sum(pseudo(pkt, 6) + pkt[l4:])
    return pkt[: l4 + 16] + struct.pack(">H", csum) + pkt[l4 + 18 :]


def super_frame(ver: int, payload: bytes, gso_size: int, flags: int = 0x18) -> bytes:
    """What the kernel hands a vnet-hdr reader for a TSO send: one header, partial checksum."""
    pkt = tcp_seg(ver, 1000, payload, flags)
    l4 = 20 if ver == 4 else 40
    partial = ref_sum(pseudo(pkt, 6))
    pkt = pkt[: l4 + 16] + struct.pack(">H", partial) + pkt[l4 + 18 :]
    gso = GSO_TCPV4 if ver == 4 else GSO_TCPV6
    return HDR.pack(NEEDS_CSUM, gso, l4 + 20, gso_size, l4, 16) + pkt


def kernel_segments(frame: bytes) -> list[bytes]:
    """Model of the kernel taking a frame we wrote: completes the checksum, then segments."""
    flags, gso_type, hdr_len, gso_size, start, off = HDR.unpack_from(frame)
    pkt = frame[10:]
    if gso_type == GSO_NONE:
        assert flags == 0
        return [pkt]
    total = ref_sum(pkt[start:])
    pkt = pkt[: start + off] + struct.pack(">H", 0xFFFF - total) + pkt[start + off + 2 :]
    assert l4_ok(pkt), "the partial checksum does not complete to a valid one"
    ver = 4 if gso_type == GSO_TCPV4 else 6
    seq0 = struct.unpack_from(">I", pkt, start + 4)[0]
    body = pkt[hdr_len:]
    return [
        tcp_seg(ver, seq0 + i, body[i : i + gso_size], flags=0x10)
        for i in range(0, len(body), gso_size)
    ]


def test_checksum_matches_reference() -> None:
    for n in (0, 1, 2, 3, 20, 1279, 1280, 65535):
        data = os.urandom(n)
        assert ones_sum(data) % 0xFFFF == ref_sum(data) % 0xFFFF
    assert ones_sum(b"\xff\xff") % 0xFFFF == 0
    assert finish(0) == 0xFFFF  # never 0: that means "no checksum" in UDP


@pytest.mark.parametrize("ver", [4, 6])
def test_split_tcp_super_packet(ver: int) -> None:
    payload = os.urandom(60000)
    segs = split(super_frame(ver, payload, 1240))
    l4 = 20 if ver == 4 else 40
    assert all(len(s) <= MAX_PACKET_SIZE for s in segs)
    assert all(l4_ok(s) for s in segs)
    assert b"".join(s[l4 + 20 :] for s in segs) == payload
    seqs = [struct.unpack_from(">I", s, l4 + 4)[0] for s in segs]
    assert seqs == [1000 + i for i in range(0, 60000, 1280 - l4 - 20)][: len(seqs)]
    # PSH only on the last; every segment still a valid Packet
    assert [s[l4 + 13] for s in segs] == [0x10] * (len(segs) - 1) + [0x18]
    for s in segs:
        Packet(s)
    if ver == 4:
        assert [struct.unpack_from(">H", s, 4)[0] for s in segs[:3]] == [0x1234, 0x1235, 0x1236]


def test_split_cuts_segments_to_the_packet_limit() -> None:
    # the interface MTU was raised to 1420: gso_size 1380 is cut down to fit 1280 bytes
    segs = split(super_frame(4, os.urandom(5000), 1380))
    assert max(len(s) for s in segs) == MAX_PACKET_SIZE
    assert all(l4_ok(s) for s in segs)


def test_split_plain_and_partial_checksum() -> None:
    pkt = tcp_seg(4, 5, b"hello")
    assert split(PLAIN_HEADER + pkt) == [pkt]
    partial = ref_sum(pseudo(pkt, 6))
    half = pkt[:36] + struct.pack(">H", partial) + pkt[38:]
    assert split(HDR.pack(NEEDS_CSUM, GSO_NONE, 0, 0, 20, 16) + half) == [pkt]


@pytest.mark.parametrize("ver", [4, 6])
def test_split_udp_l4(ver: int) -> None:
    payload = os.urandom(1000 * 5 + 300)
    src, dst = V4 if ver == 4 else V6
    udp = struct.pack(">HHHH", 5000, 6000, 8 + len(payload), 0) + payload
    pkt = (ipv4 if ver == 4 else ipv6)(src, dst, 17, udp)
    l4 = 20 if ver == 4 else 40
    frame = HDR.pack(NEEDS_CSUM, GSO_UDP_L4, l4 + 8, 1000, l4, 6) + pkt
    segs = split(frame)
    assert [len(s) - l4 - 8 for s in segs] == [1000] * 5 + [300]
    assert all(l4_ok(s) for s in segs)
    assert b"".join(s[l4 + 8 :] for s in segs) == payload


@pytest.mark.parametrize("ver", [4, 6])
def test_split_udp_keeps_datagrams_above_the_packet_limit_whole(ver: int) -> None:
    """At wg-quick's MTU 1420 an application's UDP_SEGMENT datagrams may be 1392 bytes: they
    are not cut (that would change what the receiver reads) but handed on whole, for the TUN
    reader to fragment or answer like any other oversize packet."""
    size = 1392 - (20 if ver == 4 else 40) - 8
    payload = os.urandom(3 * size)
    src, dst = V4 if ver == 4 else V6
    udp = struct.pack(">HHHH", 5000, 6000, 8 + len(payload), 0) + payload
    pkt = (ipv4 if ver == 4 else ipv6)(src, dst, 17, udp)
    l4 = 20 if ver == 4 else 40
    segs = split(HDR.pack(NEEDS_CSUM, GSO_UDP_L4, l4 + 8, size, l4, 6) + pkt)
    assert [len(s) for s in segs] == [1392] * 3
    assert all(l4_ok(s) for s in segs)
    assert b"".join(s[l4 + 8 :] for s in segs) == payload


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\0" * 5,
        HDR.pack(0, 9, 0, 0, 0, 0) + b"\x45" + bytes(40),
        HDR.pack(1, 1, 40, 0, 20, 16) + bytes(60),
    ],
)
def test_split_rejects_nonsense(frame: bytes) -> None:
    with pytest.raises(GsoError):
        split(frame)


@pytest.mark.parametrize("ver", [4, 6])
def test_coalesce_round_trip(ver: int) -> None:
    """Segments joined by coalesce come out of the (modelled) kernel as they went in."""
    l4 = 20 if ver == 4 else 40
    size = 1280 - l4 - 20
    segs = [tcp_seg(ver, 1 + i * size, os.urandom(size)) for i in range(10)]
    segs.append(tcp_seg(ver, 1 + 10 * size, os.urandom(100), flags=0x18))
    frames = coalesce(segs)
    assert [count for _, count, _ in frames] == [11]
    frame = frames[0][0]
    flags, gso_type, hdr_len, gso_size, start, off = HDR.unpack_from(frame)
    assert (flags, gso_type, hdr_len, gso_size, start, off) == (
        NEEDS_CSUM,
        GSO_TCPV4 if ver == 4 else GSO_TCPV6,
        l4 + 20,
        size,
        l4,
        16,
    )
    out = kernel_segments(frame)
    assert [s[l4 + 20 :] for s in out] == [s[l4 + 20 :] for s in segs]
    assert frame[10 + l4 + 13] == 0x18  # PSH from the last segment


def test_coalesce_keeps_flows_and_breaks() -> None:
    a = [tcp_seg(4, 1 + i * 100, bytes(100)) for i in range(3)]
    fin = tcp_seg(4, 301, b"", flags=0x11)
    gap = tcp_seg(4, 5000, bytes(100))
    other = tcp_seg(4, 1, bytes(50), ack=99)  # another ACK number: another key
    bad = bytearray(tcp_seg(4, 401, bytes(100)))
    bad[-1] ^= 1
    frames = coalesce([*a, other, fin, gap, bytes(bad), tcp_seg(6, 1, bytes(10))])
    assert [c for _, c, _ in frames] == [3, 1, 1, 1, 1, 1]
    assert frames[2][0] == PLAIN_HEADER + fin
    assert frames[4][0] == PLAIN_HEADER + bytes(bad)  # a bad checksum is never joined


def test_coalesce_no_larger_after_smaller_and_options_must_match() -> None:
    ts1 = b"\x01\x01\x08\x0a" + bytes(8)
    ts2 = b"\x01\x01\x08\x0a" + b"\0\0\0\1" + bytes(4)
    segs = [
        tcp_seg(4, 1, bytes(100), opts=ts1),
        tcp_seg(4, 101, bytes(50), opts=ts1),
        tcp_seg(4, 151, bytes(100), opts=ts1),  # larger after a smaller one: new run
        tcp_seg(4, 251, bytes(100), opts=ts2),  # other timestamp: new run
    ]
    assert [c for _, c, _ in coalesce(segs)] == [2, 1, 1]


def test_coalesce_bounds() -> None:
    segs = [tcp_seg(4, 1 + i * 1000, bytes(1000)) for i in range(MAX_SEGMENTS * 2 + 5)]
    frames = coalesce(segs)
    assert all(len(f) <= 65535 + 10 for f, _, _ in frames)
    assert sum(c for _, c, _ in frames) == len(segs)
    assert sum(b for _, _, b in frames) == sum(len(s) for s in segs)
    assert max(c for _, c, _ in frames) <= MAX_SEGMENTS
