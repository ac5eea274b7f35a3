"""MssClamp and the packet editing it rests on: SYNs leave with an MSS that fits the tunnel,
checksums right, and nothing else changes."""

from __future__ import annotations

import struct

import pytest

from actors import build
from actors.checksum import internet_checksum, pseudo_header_sum
from actors.contrib.mssclamp import MssClamp, clamp_mss
from actors.packet import PROTO_ICMP, PROTO_TCP, Packet, PacketError
from actors.testing import run

V4 = ("10.0.0.1", "10.0.0.2")
V6 = ("fd00::1", "fd00::2")
SYN, SYN_ACK, ACK = build.TCP_SYN, build.TCP_SYN | build.TCP_ACK, build.TCP_ACK


def linux_syn(src: str, dst: str, mss: int | None, flags: int = SYN) -> Packet:
    """A SYN as Linux sends one: MSS, SACK-permitted, timestamps, window scale."""
    options = build.tcp_options(mss=mss, sack_permitted=True, timestamps=(7, 0), wscale=7)
    return build.tcp(src, dst, 40000, 443, seq=1000, flags=flags, options=options)


def transport_checksum_ok(packet: Packet) -> bool:
    offset = packet.transport_offset
    assert offset is not None
    segment = packet.data[offset:]
    if packet.protocol == PROTO_ICMP:
        return internet_checksum(segment) == 0
    initial = pseudo_header_sum(packet.src_bytes, packet.dst_bytes, packet.protocol, len(segment))
    return internet_checksum(segment, initial) == 0


def header_checksum_ok(packet: Packet) -> bool:
    return packet.version == 6 or internet_checksum(packet.data[:20]) == 0


def mss_of(packet: Packet) -> int | None:
    offset = packet.transport_offset
    assert offset is not None
    data = packet.data
    at, end = offset + 20, offset + (data[offset + 12] >> 4) * 4
    while at < end and data[at] != 0:
        if data[at] == 1:
            at += 1
            continue
        if data[at] == 2:
            return int(struct.unpack_from("!H", data, at + 2)[0])
        at += data[at + 1]
    return None


@pytest.mark.parametrize(
    ("addrs", "flags", "mtu", "mss", "want"),
    [
        (V4, SYN, 1280, 1460, 1240),
        (V4, SYN_ACK, 1280, 1460, 1240),
        (V6, SYN, 1280, 1440, 1220),
        (V6, SYN_ACK, 1280, 1440, 1220),
        (V4, SYN, 1420, 1460, 1380),
        (V4, SYN, 1280, 1200, 1200),  # already fits: unchanged
    ],
)
def test_the_mss_of_a_syn_is_clamped_with_checksums_right(
    addrs: tuple[str, str], flags: int, mtu: int, mss: int, want: int
) -> None:
    syn = linux_syn(*addrs, mss=mss, flags=flags)
    result = run((MssClamp, {"mtu": mtu}), [syn])
    [out] = result.passed
    assert mss_of(out) == want
    assert transport_checksum_ok(out) and header_checksum_ok(out)
    # nothing but the MSS (and the checksum) changed
    offset = out.transport_offset
    assert offset is not None
    changed = [i for i, (a, b) in enumerate(zip(syn.data, out.data, strict=True)) if a != b]
    assert all(i in (offset + 16, offset + 17, offset + 22, offset + 23) for i in changed)
    assert result.stats["mssclamp"]["mss_clamped"] == (1 if want != mss else 0)


def test_segments_that_are_not_syns_or_have_no_mss_pass_untouched() -> None:
    packets = [
        build.tcp(*V4, 1, 2, flags=ACK, payload=b"x" * 100),
        linux_syn(*V4, mss=None),
        build.udp(*V4, 1, 2, b"y"),
        build.icmp(*V6, 128, 0, b"\0\1\0\2"),
    ]
    result = run(MssClamp, packets)
    assert result.passed == packets
    assert result.stats["mssclamp"]["mss_clamped"] == 0


def test_a_syn_whose_options_do_not_parse_passes_unchanged_and_is_counted() -> None:
    # an MSS option claiming 9 bytes in a 4-byte option area
    bad = build.tcp(*V4, 1, 2, flags=SYN, options=b"\x02\x09\x05\xb4")
    zero = build.tcp(*V4, 1, 2, flags=SYN, options=b"\x08\x00\x00\x00")  # length 0: no loop
    result = run(MssClamp, [bad, zero])
    assert result.passed == [bad, zero]
    assert result.stats["mssclamp"]["mss_malformed"] == 2
    assert clamp_mss(bad, 1280) is None


@pytest.mark.parametrize("mtu", ["1200", 1200.0, True, 100, 70000])
def test_a_bad_mtu_is_refused_when_the_stage_is_built(mtu: object) -> None:
    with pytest.raises(ValueError, match="mtu must be an integer"):
        MssClamp(mtu=mtu)  # type: ignore[arg-type]


# -- the building blocks: TCP options, Packet.edit, ICMP echo fields


def test_tcp_options_are_laid_out_as_linux_sends_them() -> None:
    options = build.tcp_options(mss=1460, sack_permitted=True, timestamps=(1, 2), wscale=7)
    assert options == (
        b"\x02\x04\x05\xb4"  # MSS 1460
        b"\x04\x02"  # SACK permitted
        b"\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x02"  # timestamps
        b"\x01\x03\x03\x07"  # NOP, window scale 7
    )
    syn = build.tcp(*V4, 1, 2, flags=SYN, options=options)
    assert syn.transport_offset is not None
    assert syn.data[syn.transport_offset + 12] >> 4 == 10  # 40 bytes of header
    assert transport_checksum_ok(syn)
    padded = build.tcp(*V6, 1, 2, flags=SYN, options=b"\x04\x02")  # padded to 4 with EOL
    assert padded.payload == b"" and transport_checksum_ok(padded)
    with pytest.raises(PacketError):
        build.tcp(*V4, 1, 2, options=bytes(41))


def test_edit_writes_bytes_and_fixes_every_checksum() -> None:
    packet = build.udp(*V4, 1000, 53, b"hello world")
    offset = packet.transport_offset
    assert offset is not None
    edited = packet.edit(offset + 8, b"HELLO")
    assert edited.payload == b"HELLO world"
    assert transport_checksum_ok(edited) and header_checksum_ok(edited)
    moved = packet.edit(16, bytes([10, 0, 0, 9]))  # the destination address: pseudo-header
    assert str(moved.dst) == "10.0.0.9" and transport_checksum_ok(moved)
    assert header_checksum_ok(moved)
    ttl = packet.edit(8, b"\x05")
    assert ttl.ttl == 5 and header_checksum_ok(ttl)


def test_edit_refuses_what_would_change_the_packets_layout_or_run_past_its_end() -> None:
    packet = build.tcp(*V4, 1, 2, flags=SYN)
    for offset, data in [(2, b"\x00\x10"), (9, bytes([17])), (0, b"\x46"), (len(packet), b"x")]:
        with pytest.raises(PacketError):
            packet.edit(offset, data)
    assert packet.edit(9, bytes([PROTO_TCP])) == packet  # the same byte is no change
    six = build.tcp(*V6, 1, 2)
    with pytest.raises(PacketError):
        six.edit(6, bytes([17]))


def test_edit_refuses_a_fragments_transport_bytes() -> None:
    whole = build.udp(*V4, 1, 2, b"z" * 64)
    fragment = Packet(whole.data[:6] + b"\x20\x00" + whole.data[8:])  # MF set
    fragment = fragment.edit(10, b"\0\0")  # the header checksum is fixed on the way
    assert header_checksum_ok(fragment)
    with pytest.raises(PacketError):
        fragment.edit(30, b"Z")


def test_icmp_echo_identifier_and_sequence() -> None:
    request = build.icmp(*V4, 8, 0, b"\x12\x34\x00\x07data")
    assert (request.icmp_id, request.icmp_seq) == (0x1234, 7)
    reply = build.echo_reply(request)
    assert reply is not None and (reply.icmp_id, reply.icmp_seq) == (0x1234, 7)
    six = build.icmp(*V6, 128, 0, b"\xab\xcd\x01\x00")
    assert (six.icmp_id, six.icmp_seq) == (0xABCD, 256)
    unreachable = build.icmp(*V4, 3, 3, bytes(8))
    assert (unreachable.icmp_id, unreachable.icmp_seq) == (None, None)
    assert build.udp(*V4, 1, 2).icmp_id is None
