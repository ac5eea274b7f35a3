"""Tests for :mod:`actors.packet`: validation, accessors, immutability and fuzzing."""

from __future__ import annotations

import copy
import ipaddress
import pickle
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.packet import MAX_PACKET_SIZE, Packet, PacketError

V4_SRC, V4_DST = "10.0.0.1", "10.0.0.2"
V6_SRC, V6_DST = "fd00::1", "fd00::2"


def ipv4(
    payload: bytes = b"",
    *,
    proto: int = 17,
    src: str = V4_SRC,
    dst: str = V4_DST,
    options: bytes = b"",
    frag: int = 0,
    total: int | None = None,
    ihl: int | None = None,
) -> bytes:
    """An IPv4 packet; ``frag`` is the 16-bit flags+offset field. Checksum left at zero."""
    assert len(options) % 4 == 0
    header_words = 5 + len(options) // 4 if ihl is None else ihl
    length = 20 + len(options) + len(payload) if total is None else total
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | header_words,
        0,
        length,
        0x1234,
        frag,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + options + payload


def ipv6(
    payload: bytes = b"",
    *,
    next_header: int = 17,
    src: str = V6_SRC,
    dst: str = V6_DST,
    payload_length: int | None = None,
) -> bytes:
    length = len(payload) if payload_length is None else payload_length
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        length,
        next_header,
        64,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return header + payload


def udp(sport: int, dport: int, body: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body


def tcp(sport: int, dport: int, body: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0) + body


def icmp_echo(body: bytes = b"") -> bytes:
    return struct.pack("!BBHHH", 8, 0, 0, 1, 1) + body


def ext_header(next_header: int, body: bytes = b"\x00" * 6) -> bytes:
    """An IPv6 extension header (hop-by-hop/routing/dest-opts layout), padded to 8n bytes."""
    assert (len(body) + 2) % 8 == 0
    return bytes([next_header, (len(body) + 2) // 8 - 1]) + body


# --- valid packets and accessors ------------------------------------------------------------


def test_ipv4_udp_accessors() -> None:
    data = ipv4(udp(5353, 53, b"x" * 56))
    p = Packet(data)
    assert p.version == 4
    assert len(p) == 84
    assert bytes(p) == data
    assert p.data is data  # bytes input is kept, not copied
    assert p.src == ipaddress.IPv4Address(V4_SRC)
    assert p.dst == ipaddress.IPv4Address(V4_DST)
    assert p.src_bytes == bytes([10, 0, 0, 1])
    assert p.dst_bytes == bytes([10, 0, 0, 2])
    assert p.protocol == 17
    assert (p.src_port, p.dst_port) == (5353, 53)
    assert not p.is_fragment
    assert repr(p) == "Packet(v4 udp 10.0.0.1:5353 -> 10.0.0.2:53, 84 bytes)"


def test_ipv4_tcp_with_options() -> None:
    p = Packet(ipv4(tcp(40000, 443, b"hello"), proto=6, options=b"\x01\x01\x01\x00"))
    assert p.protocol == 6
    assert (p.src_port, p.dst_port) == (40000, 443)  # IHL=6 honoured when locating TCP
    assert len(p) == 24 + 20 + 5


def test_ipv4_icmp_has_no_ports() -> None:
    p = Packet(ipv4(icmp_echo(b"ping"), proto=1))
    assert p.protocol == 1
    assert p.src_port is None
    assert p.dst_port is None
    assert repr(p) == "Packet(v4 icmp 10.0.0.1 -> 10.0.0.2, 32 bytes)"


def test_ipv4_transport_header_truncated_has_no_ports() -> None:
    p = Packet(ipv4(b"\x13\x88", proto=17))  # only 2 bytes of UDP header
    assert p.protocol == 17
    assert p.src_port is None
    assert p.dst_port is None


def test_ipv6_udp_accessors() -> None:
    data = ipv6(udp(1234, 51820, b"abc"))
    p = Packet(data)
    assert p.version == 6
    assert len(p) == 40 + 11
    assert p.src == ipaddress.IPv6Address(V6_SRC)
    assert p.dst == ipaddress.IPv6Address(V6_DST)
    assert p.src_bytes == ipaddress.IPv6Address(V6_SRC).packed
    assert p.dst_bytes == ipaddress.IPv6Address(V6_DST).packed
    assert len(p.src_bytes) == len(p.dst_bytes) == 16
    assert p.protocol == 17
    assert (p.src_port, p.dst_port) == (1234, 51820)
    assert not p.is_fragment
    assert repr(p) == "Packet(v6 udp [fd00::1]:1234 -> [fd00::2]:51820, 51 bytes)"


def test_ipv6_icmpv6() -> None:
    p = Packet(ipv6(struct.pack("!BBHHH", 128, 0, 0, 7, 1), next_header=58))
    assert p.protocol == 58
    assert p.src_port is None
    assert p.dst_port is None
    assert "icmpv6" in repr(p)


def test_ipv6_extension_headers_are_skipped() -> None:
    payload = ext_header(17) + udp(4000, 53)
    p = Packet(ipv6(payload, next_header=0))  # hop-by-hop, then UDP
    assert p.protocol == 17
    assert (p.src_port, p.dst_port) == (4000, 53)


def test_ipv6_chain_of_extension_headers() -> None:
    # hop-by-hop -> destination options (16 bytes) -> routing -> TCP
    payload = ext_header(60) + ext_header(43, b"\x00" * 14) + ext_header(6) + tcp(22, 2222)
    p = Packet(ipv6(payload, next_header=0))
    assert p.protocol == 6
    assert (p.src_port, p.dst_port) == (22, 2222)


def test_ipv6_stops_at_fragment_header() -> None:
    fragment = struct.pack("!BBHI", 17, 0, 0x0001, 99)  # first fragment, more follow
    p = Packet(ipv6(ext_header(44) + fragment + udp(1, 2), next_header=0))
    assert p.protocol == 44
    assert p.src_port is None
    assert p.is_fragment


def test_ipv6_truncated_extension_header_reports_last_next_header() -> None:
    # hop-by-hop claims 16 bytes but only its first 8 are present: the UDP next header was
    # read, but there is no transport header to take ports from.
    p = Packet(ipv6(bytes([17, 1]) + b"\x00" * 6, next_header=0))
    assert p.protocol == 17
    assert p.src_port is None
    # no room even for the extension header's first two bytes
    q = Packet(ipv6(b"", next_header=60))
    assert q.protocol == 60
    assert q.dst_port is None


def test_ipv6_extension_walk_is_bounded() -> None:
    payload = b"".join(ext_header(60) for _ in range(20)) + udp(1, 2)
    p = Packet(ipv6(payload, next_header=60))
    assert p.protocol == 60  # gave up after 8 headers
    assert p.src_port is None


@pytest.mark.parametrize(
    ("proto", "name"), [(6, "tcp"), (17, "udp"), (132, "sctp"), (136, "udplite")]
)
def test_ports_for_port_protocols(proto: int, name: str) -> None:
    p = Packet(ipv4(struct.pack("!HH", 7, 9) + b"\x00" * 8, proto=proto))
    assert (p.src_port, p.dst_port) == (7, 9)
    assert f" {name} " in repr(p)
    q = Packet(ipv6(struct.pack("!HH", 7, 9) + b"\x00" * 8, next_header=proto))
    assert (q.src_port, q.dst_port) == (7, 9)


def test_unknown_protocol_repr() -> None:
    p = Packet(ipv4(b"\x00" * 8, proto=253))
    assert p.protocol == 253
    assert p.src_port is None
    assert "proto 253" in repr(p)


def test_ipv4_fragments() -> None:
    first = Packet(ipv4(udp(1000, 2000), frag=0x2000))  # MF set, offset 0
    assert first.is_fragment
    assert (first.src_port, first.dst_port) == (1000, 2000)
    later = Packet(ipv4(udp(1000, 2000), frag=0x0005))  # offset 40 bytes, last fragment
    assert later.is_fragment
    assert later.protocol == 17
    assert later.src_port is None
    assert later.dst_port is None
    dont_fragment = Packet(ipv4(udp(1000, 2000), frag=0x4000))  # DF only
    assert not dont_fragment.is_fragment
    assert dont_fragment.src_port == 1000


# --- size limits ----------------------------------------------------------------------------


def test_max_size_constant() -> None:
    assert MAX_PACKET_SIZE == 1280


def test_exactly_max_size_accepted() -> None:
    v4 = ipv4(b"\x00" * (MAX_PACKET_SIZE - 20), proto=253)
    v6 = ipv6(b"\x00" * (MAX_PACKET_SIZE - 40), next_header=59)
    assert len(Packet(v4)) == len(Packet(v6)) == MAX_PACKET_SIZE


def test_one_byte_over_max_refused() -> None:
    with pytest.raises(PacketError, match=r"\b1281\b.*\b1280\b"):
        Packet(ipv4(b"\x00" * (MAX_PACKET_SIZE - 19), proto=253))
    with pytest.raises(PacketError, match=r"\b1281\b.*\b1280\b"):
        Packet(ipv6(b"\x00" * (MAX_PACKET_SIZE - 39), next_header=59))


# --- invalid packets ------------------------------------------------------------------------


def _v4_bad_version() -> bytes:
    data = bytearray(ipv4(udp(1, 2)))
    data[0] = 0x55
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(_v4_bad_version(), "version 5", id="version-5"),
        pytest.param(b"\x00" * 40, "version 0", id="version-0"),
        pytest.param(ipv4()[:19], "19 bytes", id="v4-short-header"),
        pytest.param(ipv4(ihl=4), "header length 16 < 20", id="v4-ihl-4"),
        pytest.param(ipv4(ihl=0), "header length 0 < 20", id="v4-ihl-0"),
        pytest.param(ipv4(ihl=15, payload=b"\x00" * 8), "header length 60", id="v4-ihl-beyond"),
        pytest.param(
            ipv4(udp(1, 2), total=60), "total length 60 != buffer length 28", id="v4-long"
        ),
        pytest.param(
            ipv4(udp(1, 2), total=20), "total length 20 != buffer length 28", id="v4-short"
        ),
        pytest.param(ipv4(udp(1, 2)) + b"\x00", "total length 28 != buffer length 29", id="v4-pad"),
        pytest.param(ipv6()[:39], "39 bytes", id="v6-short-header"),
        pytest.param(ipv6(udp(1, 2), payload_length=9), "!= buffer length 48", id="v6-long"),
        pytest.param(ipv6(udp(1, 2), payload_length=7), "!= buffer length 48", id="v6-short"),
        pytest.param(ipv6(udp(1, 2)) + b"\x00" * 8, "payload length 8", id="v6-pad"),
    ],
)
def test_invalid_packets_raise_packet_error(data: bytes, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        Packet(data)


def test_packet_error_is_value_error() -> None:
    assert issubclass(PacketError, ValueError)
    with pytest.raises(ValueError):
        Packet(b"")


def test_non_buffer_is_type_error() -> None:
    with pytest.raises(TypeError):
        Packet("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Packet(40)  # type: ignore[arg-type]


# --- immutability and value semantics -------------------------------------------------------


def test_attributes_cannot_be_set_or_deleted() -> None:
    p = Packet(ipv4(udp(1, 2)))
    with pytest.raises(AttributeError):
        p.data = b"other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        p.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del p.data
    assert not hasattr(p, "__dict__")
    assert p.data == ipv4(udp(1, 2))


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_mutable_input_is_copied(kind: type) -> None:
    original = bytearray(ipv4(udp(1, 2)))
    p = Packet(kind(original))
    assert type(p.data) is bytes
    original[12:16] = b"\xff\xff\xff\xff"
    assert p.src == ipaddress.IPv4Address(V4_SRC)
    assert p.data == ipv4(udp(1, 2))


def test_equality_and_hash_by_data() -> None:
    a = Packet(ipv4(udp(1, 2)))
    b = Packet(bytearray(ipv4(udp(1, 2))))
    c = Packet(ipv4(udp(1, 3)))
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert a != a.data  # a Packet is not its bytes
    assert len({a, b, c}) == 2


def test_copy_and_pickle_round_trip() -> None:
    p = Packet(ipv6(udp(1, 2)))
    assert copy.copy(p) is p
    assert copy.deepcopy(p) is p
    q = pickle.loads(pickle.dumps(p))
    assert q == p
    assert q is not p


# --- from_padded ----------------------------------------------------------------------------


def test_from_padded_trims_zero_padding() -> None:
    v4 = ipv4(udp(5353, 53, b"abc"))  # 31 bytes
    p = Packet.from_padded(v4 + b"\x00" * 1)
    assert bytes(p) == v4
    v6 = ipv6(udp(1, 2, b"abcdef"))  # 54 bytes, padded to 64
    q = Packet.from_padded(bytearray(v6 + b"\x00" * 10))
    assert bytes(q) == v6
    assert (q.src_port, q.dst_port) == (1, 2)


def test_from_padded_without_padding() -> None:
    v4 = ipv4(udp(1, 2))
    assert bytes(Packet.from_padded(v4)) == v4


def test_from_padded_max_size_with_padding_beyond() -> None:
    v4 = ipv4(b"\x00" * (MAX_PACKET_SIZE - 20), proto=253)
    assert len(Packet.from_padded(v4 + b"\x00" * 16)) == MAX_PACKET_SIZE


@pytest.mark.parametrize(
    "buf",
    [
        pytest.param(ipv4(udp(1, 2), total=100), id="v4-declared-beyond"),
        pytest.param(ipv6(udp(1, 2), payload_length=100), id="v6-declared-beyond"),
    ],
)
def test_from_padded_refuses_declared_length_beyond_buffer(buf: bytes) -> None:
    with pytest.raises(PacketError, match=r"exceeds buffer length \d+"):
        Packet.from_padded(buf)


@pytest.mark.parametrize(
    "buf",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00" * 32, id="zeros"),
        pytest.param(ipv4()[:10], id="v4-short"),
        pytest.param(ipv4(udp(1, 2), total=8) + b"\x00" * 8, id="v4-total-below-header"),
        pytest.param(ipv6()[:30], id="v6-short"),
        pytest.param(ipv4(ihl=15, payload=b"\x00" * 60, total=40), id="v4-ihl-beyond-total"),
        pytest.param(ipv4(b"\x00" * 1300, proto=253), id="too-big"),
    ],
)
def test_from_padded_invalid(buf: bytes) -> None:
    with pytest.raises(PacketError):
        Packet.from_padded(buf)


# --- property-based -------------------------------------------------------------------------


def _read_all(p: Packet) -> None:
    """Touch every accessor; any exception fails the calling test."""
    assert p.version in (4, 6)
    assert len(p.src_bytes) == len(p.dst_bytes) == (4 if p.version == 4 else 16)
    assert p.src.packed == p.src_bytes
    assert p.dst.packed == p.dst_bytes
    assert 0 <= p.protocol <= 255
    for port in (p.src_port, p.dst_port):
        assert port is None or 0 <= port <= 65535
    assert isinstance(p.is_fragment, bool)
    assert repr(p).startswith(f"Packet(v{p.version} ")
    assert len(p) == len(bytes(p))
    assert hash(p) == hash(Packet(bytes(p)))


@given(st.binary(max_size=1500))
def test_arbitrary_bytes_only_raise_packet_error(data: bytes) -> None:
    try:
        p = Packet(data)
    except PacketError:
        return
    assert bytes(p) == data
    _read_all(p)


@given(st.binary(max_size=1500))
def test_arbitrary_bytes_from_padded_only_raises_packet_error(data: bytes) -> None:
    try:
        p = Packet.from_padded(data)
    except PacketError:
        return
    assert data.startswith(bytes(p))
    _read_all(p)


@st.composite
def valid_packets(draw: st.DrawFn) -> bytes:
    """Valid IPv4/IPv6 packets with random options, protocols, fragments and ext headers."""
    proto = draw(
        st.sampled_from([0, 1, 6, 17, 43, 44, 58, 60, 132, 136, 253]) | st.integers(0, 255)
    )
    if draw(st.booleans()):
        options = draw(st.binary(max_size=40).map(lambda b: b[: len(b) - len(b) % 4]))
        room = MAX_PACKET_SIZE - 20 - len(options)
        payload = draw(st.binary(max_size=min(room, 200)))
        frag = draw(st.sampled_from([0, 0x2000, 0x4000]) | st.integers(0, 0xFFFF))
        return ipv4(
            payload,
            proto=proto,
            src=str(draw(st.ip_addresses(v=4))),
            dst=str(draw(st.ip_addresses(v=4))),
            options=options,
            frag=frag,
        )
    headers = b""
    next_header = proto
    for ext in draw(st.lists(st.sampled_from([0, 43, 60]), max_size=10)):
        body = draw(
            st.binary(min_size=6, max_size=30).map(lambda b: b[: len(b) - (len(b) + 2) % 8])
        )
        headers = ext_header(next_header, body) + headers
        next_header = ext
    payload = headers + draw(st.binary(max_size=200))
    if draw(st.booleans()):  # arbitrary (possibly lying) extension bytes
        payload = draw(st.binary(max_size=300))
    return ipv6(
        payload[: MAX_PACKET_SIZE - 40],
        next_header=next_header,
        src=str(draw(st.ip_addresses(v=6))),
        dst=str(draw(st.ip_addresses(v=6))),
    )


@given(valid_packets())
def test_valid_packets_round_trip_and_accessors_never_raise(data: bytes) -> None:
    p = Packet(data)
    assert bytes(p) == data
    assert p == Packet(bytearray(data))
    _read_all(p)
    padded = data + b"\x00" * (-len(data) % 16)
    assert Packet.from_padded(padded) == p


@given(valid_packets(), st.integers(1, 15))
def test_valid_packets_truncated_are_refused(data: bytes, cut: int) -> None:
    truncated = data[: max(0, len(data) - cut)]
    with pytest.raises(PacketError):
        Packet(truncated)
    with pytest.raises(PacketError):
        Packet.from_padded(truncated)


@given(
    st.lists(st.sampled_from([0, 43, 60]), max_size=8),
    st.lists(st.integers(0, 3), min_size=8, max_size=8),
    st.integers(0, 65535),
    st.integers(0, 65535),
)
def test_ipv6_extension_chains_up_to_eight_reach_udp(
    chain: list[int], sizes: list[int], sport: int, dport: int
) -> None:
    payload = udp(sport, dport)
    next_header = 17
    for ext, size in zip(chain, sizes, strict=False):
        payload = ext_header(next_header, b"\x00" * (6 + 8 * size)) + payload
        next_header = ext
    p = Packet(ipv6(payload, next_header=next_header))
    assert p.protocol == 17
    assert (p.src_port, p.dst_port) == (sport, dport)
    assert not p.is_fragment
