"""ICMP too-big answers for packets above 1280 bytes."""

from __future__ import annotations

import struct

from ippkt import checksum, ipv4, ipv6

from actors.icmp import too_big_reply


def big_v4(df: bool = True, proto: int = 17, payload: bytes = b"x" * 1400) -> bytes:
    data = bytearray(ipv4("10.0.0.1", "10.0.0.2", proto, payload))
    if not df:
        data[6] &= ~0x40
        data[10:12] = b"\0\0"
        data[10:12] = struct.pack("!H", checksum(bytes(data[:20])))
    return bytes(data)


def test_ipv4_with_df_gets_fragmentation_needed() -> None:
    original = big_v4()
    reply = too_big_reply(original)
    assert reply is not None
    raw = bytes(reply)
    assert (str(reply.src), str(reply.dst)) == ("10.0.0.2", "10.0.0.1")
    assert checksum(raw[:20]) == 0  # a valid header checksum sums to zero
    assert raw[20:22] == bytes([3, 4])  # destination unreachable, fragmentation needed
    assert struct.unpack("!H", raw[26:28])[0] == 1280
    assert checksum(raw[20:]) == 0
    assert raw[28:] == original[:28]  # quotes the IP header and 8 bytes


def test_ipv4_without_df_and_icmp_errors_get_nothing() -> None:
    assert too_big_reply(big_v4(df=False)) is None
    error = bytes([3, 3, 0, 0, 0, 0, 0, 0]) + b"y" * 1400
    assert too_big_reply(big_v4(proto=1, payload=error)) is None
    echo_request = bytes([8, 0, 0, 0, 0, 1, 0, 1]) + b"z" * 1300
    assert too_big_reply(big_v4(proto=1, payload=echo_request)) is not None  # not an error


def test_ipv6_gets_packet_too_big_within_the_minimum_mtu() -> None:
    original = ipv6("fd00::1", "fd00::2", 17, b"u" * 1400)
    reply = too_big_reply(original)
    assert reply is not None and len(reply) <= 1280
    raw = bytes(reply)
    assert (str(reply.src), str(reply.dst)) == ("fd00::2", "fd00::1")
    assert raw[40] == 2 and struct.unpack("!I", raw[44:48])[0] == 1280
    pseudo = raw[8:24] + raw[24:40] + struct.pack("!I3xB", len(raw) - 40, 58)
    assert checksum(pseudo + raw[40:]) == 0
    assert too_big_reply(ipv6("fd00::1", "fd00::2", 58, bytes([1]) + b"e" * 1400)) is None


def test_garbage_gets_nothing() -> None:
    for data in (b"", b"\x45" * 10, b"\x60" * 30, bytes(1400)):
        assert too_big_reply(data) is None
