"""Cryptokey routing: actors/wireguard/allowedips.py longest-prefix match, IPv4 and IPv6."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.wireguard.allowedips import AllowedIPs, parse_prefix

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def v4_table() -> AllowedIPs[str]:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("10.0.0.0/8", "A")
    t.insert("10.1.0.0/16", "B")
    t.insert("10.1.2.3/32", "C")
    t.insert("0.0.0.0/0", "D")
    return t


def v6_table() -> AllowedIPs[str]:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("::/0", "D6")
    t.insert("fd00::/8", "A6")
    t.insert("fd00:1::/32", "B6")
    t.insert("fd00:1::5/128", "C6")
    return t


def both(t: AllowedIPs[str], addr: str) -> str | None:
    """lookup and lookup_bytes, which must agree."""
    by_str = t.lookup(addr)
    by_obj = t.lookup(ipaddress.ip_address(addr))
    by_bytes = t.lookup_bytes(ipaddress.ip_address(addr).packed)
    assert by_str == by_obj == by_bytes
    return by_str


@pytest.mark.parametrize(
    ("addr", "want"),
    [
        ("10.1.2.3", "C"),
        ("10.1.2.4", "B"),
        ("10.1.2.2", "B"),
        ("10.1.255.255", "B"),
        ("10.1.0.0", "B"),
        ("10.2.0.0", "A"),
        ("10.0.0.1", "A"),
        ("10.255.255.255", "A"),
        ("11.0.0.0", "D"),
        ("9.255.255.255", "D"),
        ("0.0.0.0", "D"),
        ("255.255.255.255", "D"),
        ("192.168.1.1", "D"),
    ],
)
def test_ipv4_longest_prefix(addr: str, want: str) -> None:
    assert both(v4_table(), addr) == want


@pytest.mark.parametrize(
    ("addr", "want"),
    [
        ("fd00:1::5", "C6"),
        ("fd00:1::4", "B6"),
        ("fd00:1::6", "B6"),
        ("fd00:1:ffff:ffff:ffff:ffff:ffff:ffff", "B6"),
        ("fd00:2::5", "A6"),
        ("fd00::1", "A6"),
        ("fdff:ffff::1", "A6"),
        ("fe00::1", "D6"),
        ("fc00::1", "D6"),
        ("::", "D6"),
        ("::1", "D6"),
        ("2001:db8::1", "D6"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "D6"),
    ],
)
def test_ipv6_longest_prefix(addr: str, want: str) -> None:
    assert both(v6_table(), addr) == want


def test_empty_table() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    assert len(t) == 0
    assert both(t, "10.0.0.1") is None
    assert both(t, "fd00::1") is None
    assert list(t.items()) == []


def test_no_default_route_misses() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("10.0.0.0/8", "A")
    t.insert("fd00::/8", "A6")
    assert both(t, "11.0.0.1") is None
    assert both(t, "fe00::1") is None
    assert both(t, "10.9.9.9") == "A"


def test_families_do_not_mix() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("::/0", "V6")
    assert both(t, "10.0.0.1") is None
    assert both(t, "0.0.0.0") is None
    assert t.lookup_bytes(bytes(4)) is None
    t.insert("0.0.0.0/0", "V4")
    assert both(t, "10.0.0.1") == "V4"
    assert both(t, "::") == "V6"
    # an IPv4-mapped IPv6 address is an IPv6 address
    assert both(t, "::ffff:10.0.0.1") == "V6"
    t.remove("::/0")
    assert both(t, "::ffff:10.0.0.1") is None
    assert both(t, "10.0.0.1") == "V4"


def test_families_do_not_mix_same_bits() -> None:
    # 10.0.0.0/8 and 0a00::/8 have the same leading bits, but different families
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("10.0.0.0/8", "V4")
    assert both(t, "a00::1") is None
    t.insert("a00::/8", "V6")
    assert both(t, "10.0.0.1") == "V4"
    assert both(t, "a00::1") == "V6"


@pytest.mark.parametrize("n", [0, 1, 3, 5, 8, 15, 17, 32])
def test_lookup_bytes_bad_length(n: int) -> None:
    t = v4_table()
    t.insert("::/0", "D6")
    assert t.lookup_bytes(bytes(n)) is None


def test_host_bits_masked_on_insert() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("10.1.2.3/16", "B")
    assert t.prefixes("B") == [ipaddress.ip_network("10.1.0.0/16")]
    assert both(t, "10.1.99.99") == "B"
    assert both(t, "10.2.0.0") is None
    t.insert("fd00:1::5/32", "B6")
    assert t.prefixes("B6") == [ipaddress.ip_network("fd00:1::/32")]
    assert both(t, "fd00:1:ffff::1") == "B6"
    # removing by the un-masked text removes the masked prefix
    t.remove("10.1.200.1/16")
    assert both(t, "10.1.99.99") is None
    assert parse_prefix(" 10.1.2.3/16 ") == ipaddress.ip_network("10.1.0.0/16")
    assert parse_prefix("10.1.2.3") == ipaddress.ip_network("10.1.2.3/32")
    assert parse_prefix("fd00::1") == ipaddress.ip_network("fd00::1/128")


def test_insert_accepts_network_objects() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert(ipaddress.ip_network("192.168.0.0/24"), "N")
    t.insert(ipaddress.ip_network("2001:db8::/64"), "N6")
    assert both(t, "192.168.0.200") == "N"
    assert both(t, "2001:db8::abcd") == "N6"
    t.remove(ipaddress.ip_network("192.168.0.0/24"))
    assert both(t, "192.168.0.200") is None


def test_reinsert_moves_prefix() -> None:
    t = v4_table()
    t.insert("10.1.0.0/16", "X")
    assert both(t, "10.1.9.9") == "X"
    assert both(t, "10.1.2.3") == "C"
    assert t.prefixes("B") == []
    assert t.prefixes("X") == [ipaddress.ip_network("10.1.0.0/16")]
    assert len(t) == 4
    t6 = v6_table()
    t6.insert("fd00::/8", "X6")
    assert both(t6, "fd00:2::1") == "X6"
    assert t6.prefixes("A6") == []
    assert len(t6) == 4


def test_remove() -> None:
    t = v4_table()
    t.remove("10.1.0.0/16")
    assert both(t, "10.1.9.9") == "A"
    assert both(t, "10.1.2.3") == "C"
    t.remove("10.1.2.3/32")
    assert both(t, "10.1.2.3") == "A"
    t.remove("10.0.0.0/8")
    assert both(t, "10.1.2.3") == "D"
    t.remove("0.0.0.0/0")
    assert both(t, "10.1.2.3") is None
    assert len(t) == 0
    # removing what is absent is a no-op
    t.remove("10.0.0.0/8")
    t.remove("fd00::/8")
    assert len(t) == 0


def test_remove_only_exact_prefix() -> None:
    t = v4_table()
    t.remove("10.0.0.0/9")  # not present; must not remove 10.0.0.0/8
    t.remove("10.1.0.0/24")
    assert both(t, "10.2.0.0") == "A"
    assert both(t, "10.1.9.9") == "B"
    assert len(t) == 4


def test_remove_value() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("10.0.0.0/8", "peer1")
    t.insert("10.1.0.0/16", "peer2")
    t.insert("10.1.2.0/24", "peer1")
    t.insert("192.168.0.0/16", "peer1")
    t.insert("fd00::/8", "peer1")
    t.insert("fd00:1::/32", "peer2")
    t.insert("0.0.0.0/0", "peer3")
    t.remove_value("peer1")
    assert t.prefixes("peer1") == []
    assert both(t, "10.1.2.3") == "peer2"
    assert both(t, "10.2.0.0") == "peer3"
    assert both(t, "192.168.1.1") == "peer3"
    assert both(t, "fd00:1::1") == "peer2"
    assert both(t, "fd00:2::1") is None
    assert len(t) == 3
    t.remove_value("nobody")
    assert len(t) == 3
    t.remove_value("peer3")
    assert both(t, "10.2.0.0") is None
    assert both(t, "10.1.0.1") == "peer2"


def test_prefixes_and_items() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    nets = ["10.0.0.0/8", "10.1.2.3/32", "fd00::/8", "fd00:1::5/128", "0.0.0.0/0"]
    for n in nets:
        t.insert(n, "P")
    t.insert("10.1.0.0/16", "Q")
    got = t.prefixes("P")
    assert list(map(str, got)) == nets  # insertion order, as wireguard-go lists them
    assert t.prefixes("Q") == [ipaddress.ip_network("10.1.0.0/16")]
    assert t.prefixes("R") == []
    items = dict(t.items())
    assert len(items) == len(t) == 6
    assert items[ipaddress.ip_network("10.1.0.0/16")] == "Q"
    assert items[ipaddress.ip_network("fd00:1::5/128")] == "P"


def test_prefix_inserted_again_goes_last_as_in_wireguard_go() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    for n in ["10.0.0.0/8", "fd00::/8", "10.9.0.0/16", "192.168.0.0/24"]:
        t.insert(n, "P")
    t.insert("10.0.0.0/8", "P")  # same peer: moves to the end
    t.insert("fd00::/8", "Q")  # taken away...
    t.insert("fd00::/8", "P")  # ...and back: last again
    assert list(map(str, t.prefixes("P"))) == [
        "10.9.0.0/16",
        "192.168.0.0/24",
        "10.0.0.0/8",
        "fd00::/8",
    ]
    copied = t.copy()
    assert copied.prefixes("P") == t.prefixes("P")


def test_copy_is_independent() -> None:
    t = v4_table()
    t.insert("fd00::/8", "A6")
    c = t.copy()
    assert dict(c.items()) == dict(t.items())
    c.insert("10.1.2.0/24", "NEW")
    c.insert("10.0.0.0/8", "MOVED")
    c.remove("0.0.0.0/0")
    c.remove_value("A6")
    c.insert("fe80::/10", "LL")
    assert both(c, "10.1.2.9") == "NEW"
    assert both(c, "11.0.0.1") is None
    # the original is unchanged
    assert both(t, "10.1.2.9") == "B"
    assert both(t, "10.9.0.0") == "A"
    assert both(t, "11.0.0.1") == "D"
    assert both(t, "fd00::1") == "A6"
    assert both(t, "fe80::1") is None
    assert len(t) == 5
    # and the other way round
    t.insert("172.16.0.0/12", "T")
    assert both(c, "172.16.0.1") is None


@pytest.mark.parametrize("value", [0, "", (), b"\x00" * 32])
def test_falsy_values_route(value: object) -> None:
    t: AllowedIPs[object] = AllowedIPs()
    t.insert("10.0.0.0/8", value)
    t.insert("0.0.0.0/0", "default")
    assert t.lookup("10.0.0.1") == value
    assert t.lookup("11.0.0.1") == "default"


def test_peer_public_keys_as_values() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    t: AllowedIPs[bytes] = AllowedIPs()
    t.insert("10.77.0.1/32", a)
    t.insert("10.77.0.0/24", b)
    t.insert("fd77::1/128", a)
    assert t.lookup_bytes(bytes([10, 77, 0, 1])) == a
    assert t.lookup_bytes(bytes([10, 77, 0, 2])) == b
    assert t.lookup_bytes(ipaddress.ip_address("fd77::1").packed) == a
    t.remove_value(bytes(a))  # equal, not identical
    assert t.lookup_bytes(bytes([10, 77, 0, 1])) == b
    assert t.lookup_bytes(ipaddress.ip_address("fd77::1").packed) is None


def test_all_v4_prefix_lengths() -> None:
    addr = ipaddress.ip_address("172.31.254.129")
    t: AllowedIPs[int] = AllowedIPs()
    for length in range(33):
        t.insert(ipaddress.ip_network(f"{addr}/{length}", strict=False), length)
    assert t.lookup(addr) == 32
    for length in range(32, 0, -1):
        t.remove(ipaddress.ip_network(f"{addr}/{length}", strict=False))
        assert t.lookup(addr) == length - 1
        # an address differing in the bit just after the prefix still matches it
        flipped = ipaddress.ip_address(int(addr) ^ (1 << (32 - length)))
        assert t.lookup(flipped) == length - 1


# --- model test --------------------------------------------------------------------------------


def reference(
    nets: dict[Network, int], addr: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> int | None:
    best: Network | None = None
    for net in nets:
        if (
            net.version == addr.version
            and addr in net
            and (best is None or net.prefixlen > best.prefixlen)
        ):
            best = net
    return None if best is None else nets[best]


# Addresses clustered around a few bases so prefixes actually overlap.
V4_BASES = [0x0A000000, 0x0A010203, 0xC0A80000, 0x00000000, 0xFFFFFFFF]
V6_BASES = [0xFD00 << 112, (0xFD00 << 112) | (1 << 96) | 5, 0, (1 << 128) - 1]


@st.composite
def v4_address(draw: st.DrawFn) -> ipaddress.IPv4Address:
    base = draw(st.sampled_from(V4_BASES))
    flip = draw(st.integers(0, 2**32 - 1)) & ((1 << draw(st.integers(0, 32))) - 1)
    return ipaddress.IPv4Address(base ^ flip)


@st.composite
def v6_address(draw: st.DrawFn) -> ipaddress.IPv6Address:
    base = draw(st.sampled_from(V6_BASES))
    flip = draw(st.integers(0, 2**128 - 1)) & ((1 << draw(st.integers(0, 128))) - 1)
    return ipaddress.IPv6Address(base ^ flip)


@st.composite
def v4_network(draw: st.DrawFn) -> ipaddress.IPv4Network:
    addr = draw(v4_address())
    return ipaddress.IPv4Network((int(addr), draw(st.integers(0, 32))), strict=False)


@st.composite
def v6_network(draw: st.DrawFn) -> ipaddress.IPv6Network:
    addr = draw(v6_address())
    return ipaddress.IPv6Network((int(addr), draw(st.integers(0, 128))), strict=False)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.one_of(v4_network(), v6_network()), st.integers(0, 5)), max_size=40),
    st.lists(st.one_of(v4_address(), v6_address()), min_size=1, max_size=40),
    st.lists(st.integers(0, 5), max_size=2),
)
def test_matches_brute_force(
    routes: list[tuple[Network, int]],
    addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    removed_values: list[int],
) -> None:
    t: AllowedIPs[int] = AllowedIPs()
    model: dict[Network, int] = {}
    for net, value in routes:
        t.insert(net, value)
        model[net] = value  # a re-insert moves the prefix
    # probe the inserted network addresses too, the most interesting edges
    probes = list(addrs) + [net.network_address for net in model]
    probes += [net.broadcast_address for net in model]
    for addr in probes:
        want = reference(model, addr)
        assert t.lookup(addr) == want
        assert t.lookup_bytes(addr.packed) == want
    assert len(t) == len(model)
    for value in removed_values:
        t.remove_value(value)
        model = {n: v for n, v in model.items() if v != value}
    for addr in probes:
        assert t.lookup(addr) == reference(model, addr)
    assert dict(t.items()) == model
    for value in range(6):
        assert sorted(t.prefixes(value), key=str) == sorted(
            (n for n, v in model.items() if v == value), key=str
        )


@settings(max_examples=200)
@given(
    st.lists(st.one_of(v4_network(), v6_network()), min_size=1, max_size=30),
    st.data(),
)
def test_remove_matches_brute_force(nets: list[Network], data: st.DataObject) -> None:
    t: AllowedIPs[int] = AllowedIPs()
    model: dict[Network, int] = {}
    for i, net in enumerate(nets):
        t.insert(net, i)
        model[net] = i
    doomed = data.draw(st.lists(st.sampled_from(nets), max_size=len(nets)))
    for net in doomed:
        t.remove(net)
        model.pop(net, None)
    probes = [n.network_address for n in nets] + [n.broadcast_address for n in nets]
    for addr in probes:
        assert t.lookup(addr) == reference(model, addr)
    assert len(t) == len(model)
