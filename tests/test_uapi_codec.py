"""The UAPI codec (actors.uapi): every key good and bad, strictness, order, and fuzzing.

The codec is the only thing between a local client's text and the device, so these tests pin
wireguard-go's grammar key by key, check that malformed input of any shape is refused with a
UapiError (never another exception), and that no error message can leak a key into a log.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
from collections.abc import Iterator
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.uapi import (
    EINVAL,
    EIO,
    EPROTO,
    MAX_LINE,
    MAX_SET_LINES,
    DeviceStatus,
    PeerChange,
    PeerStatus,
    SetRequest,
    UapiError,
    format_endpoint,
    format_get,
    parse_get,
    parse_set,
)
from actors.wireguard.allowedips import Network, parse_prefix

PRIV = bytes(range(1, 33))
PUB_A = bytes(range(100, 132))
PUB_B = bytes(range(200, 232))
PSK = bytes(range(50, 82))
ZERO = bytes(32)


def net(text: str) -> Network:
    return ipaddress.ip_network(text)


def peer_lines(*lines: str, key: bytes = PUB_A) -> list[str]:
    return [f"public_key={key.hex()}", *lines]


def one_peer(*lines: str) -> PeerChange:
    request = parse_set(peer_lines(*lines))
    assert len(request.peers) == 1
    return request.peers[0]


def errno_of(lines: list[str]) -> int:
    with pytest.raises(UapiError) as info:
        parse_set(lines)
    return info.value.errno


# -- device keys


@pytest.mark.parametrize(
    ("line", "field", "expected"),
    [
        (f"private_key={PRIV.hex()}", "private_key", PRIV),
        (f"private_key={PRIV.hex().upper()}", "private_key", PRIV),
        (f"private_key={ZERO.hex()}", "private_key", ZERO),
        ("listen_port=0", "listen_port", 0),
        ("listen_port=51820", "listen_port", 51820),
        ("listen_port=65535", "listen_port", 65535),
        ("listen_port=051820", "listen_port", 51820),  # Go's ParseUint takes leading zeros
        ("fwmark=0", "fwmark", 0),
        ("fwmark=51820", "fwmark", 51820),
        ("fwmark=4294967295", "fwmark", 2**32 - 1),
        ("replace_peers=true", "replace_peers", True),
    ],
)
def test_device_key_good(line: str, field: str, expected: object) -> None:
    request = parse_set([line])
    assert getattr(request, field) == expected
    assert request.peers == ()


def test_device_keys_absent_mean_unchanged() -> None:
    assert parse_set([]) == SetRequest(None, None, None, False, ())


@pytest.mark.parametrize(
    "line",
    [
        "private_key=",
        f"private_key={PRIV.hex()[:-1]}",
        f"private_key={PRIV.hex()}0",
        f"private_key={PRIV.hex()[:-1]}g",
        f"private_key= {PRIV.hex()[1:]}",
        f"private_key={PRIV.hex()} ",
        "private_key=AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",  # base64 is not UAPI
        "listen_port=",
        "listen_port=65536",
        "listen_port=-1",
        "listen_port=+1",
        "listen_port= 1",
        "listen_port=1 ",
        "listen_port=0x10",
        "listen_port=1_000",
        "listen_port=1.0",
        "listen_port=\u0661\u0662",  # Arabic-Indic digits: str.isdigit() but not decimal ASCII
        "listen_port=\u00b2",  # superscript two: isdigit() too
        "fwmark=4294967296",
        "fwmark=-0",
        "fwmark=off",
        "fwmark=0x1",
        "replace_peers=false",
        "replace_peers=True",
        "replace_peers=1",
        "replace_peers=",
        "protocol_version=1",  # only a peer key in wireguard-go
        "endpoint=1.2.3.4:1",  # a peer key before any public_key
        "allowed_ip=10.0.0.0/8",
        "remove=true",
        "Private_key=00",
        "private_key =00",
        "=",
        "=true",
        "unknown=1",
    ],
)
def test_device_key_bad(line: str) -> None:
    assert errno_of([line]) == EINVAL


# -- peer keys


@pytest.mark.parametrize(
    ("line", "field", "expected"),
    [
        ("remove=true", "remove", True),
        ("update_only=true", "update_only", True),
        (f"preshared_key={PSK.hex()}", "preshared_key", PSK),
        (f"preshared_key={PSK.hex().upper()}", "preshared_key", PSK),
        (f"preshared_key={ZERO.hex()}", "preshared_key", ZERO),
        ("endpoint=1.2.3.4:51820", "endpoint", ("1.2.3.4", 51820)),
        ("persistent_keepalive_interval=0", "persistent_keepalive", 0),
        ("persistent_keepalive_interval=25", "persistent_keepalive", 25),
        ("persistent_keepalive_interval=65535", "persistent_keepalive", 65535),
        ("replace_allowed_ips=true", "replace_allowed_ips", True),
        ("allowed_ip=10.0.0.0/8", "allowed_ips", (net("10.0.0.0/8"),)),
        ("protocol_version=1", "public_key", PUB_A),  # accepted, changes nothing
    ],
)
def test_peer_key_good(line: str, field: str, expected: object) -> None:
    assert getattr(one_peer(line), field) == expected


def test_peer_defaults_mean_unchanged() -> None:
    assert one_peer() == PeerChange(PUB_A)
    change = one_peer()
    assert change.preshared_key is None
    assert change.endpoint is None
    assert change.persistent_keepalive is None
    assert not (change.remove or change.update_only or change.replace_allowed_ips)


@pytest.mark.parametrize(
    "line",
    [
        "remove=false",
        "remove=1",
        "remove=",
        "update_only=false",
        "update_only=TRUE",
        "preshared_key=",
        f"preshared_key={PSK.hex()[:62]}",
        f"preshared_key={PSK.hex()}00",
        f"preshared_key=0x{PSK.hex()[2:]}",
        "persistent_keepalive_interval=65536",
        "persistent_keepalive_interval=-1",
        "persistent_keepalive_interval=+25",
        "persistent_keepalive_interval= 25",
        "persistent_keepalive_interval=25s",
        "persistent_keepalive_interval=off",
        "persistent_keepalive_interval=",
        "replace_allowed_ips=false",
        "replace_allowed_ips=yes",
        "allowed_ip=",
        "allowed_ip=garbage",
        "protocol_version=2",
        "protocol_version=0",
        "protocol_version=01",
        "protocol_version=",
        "listen_port=1",  # a device key inside a peer section
        "private_key=" + PRIV.hex(),
        "fwmark=1",
        "replace_peers=true",
        "persistent_keepalive=25",
        "allowed_ips=10.0.0.0/8",
        "unknown=1",
        "=1",
    ],
)
def test_peer_key_bad(line: str) -> None:
    assert errno_of(peer_lines(line)) == EINVAL


@pytest.mark.parametrize(
    "value",
    [
        "",
        PUB_A.hex()[:-1],
        PUB_A.hex() + "0",
        PUB_A.hex()[:-1] + "z",
        " " + PUB_A.hex()[1:],
        "ZGVhZGJlZWZkZWFkYmVlZmRlYWRiZWVmZGVhZGJlZWY=",
    ],
)
def test_public_key_bad(value: str) -> None:
    assert errno_of([f"public_key={value}"]) == EINVAL


def test_public_key_upper_case() -> None:
    assert parse_set([f"public_key={PUB_A.hex().upper()}"]).peers == (PeerChange(PUB_A),)


# -- endpoints


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.3.4:51820", ("1.2.3.4", 51820)),
        ("1.2.3.4:1", ("1.2.3.4", 1)),
        ("255.255.255.255:65535", ("255.255.255.255", 65535)),
        ("[fd00::1]:51820", ("fd00::1", 51820)),
        ("[FD00:0:0::1]:51820", ("fd00::1", 51820)),  # canonical text, so equal hosts compare
        ("[::1]:443", ("::1", 443)),
        ("[::ffff:1.2.3.4]:80", (str(ipaddress.IPv6Address("::ffff:1.2.3.4")), 80)),
        ("[fe80::1%eth0]:51820", ("fe80::1%eth0", 51820)),
        ("[fe80::1%3]:51820", ("fe80::1%3", 51820)),
        ("1.2.3.4:051820", ("1.2.3.4", 51820)),
        ("1.2.3.4:0", ("1.2.3.4", 0)),  # wireguard-go takes port 0 (sending there fails)
        ("[fd00::1]:0", ("fd00::1", 0)),
    ],
)
def test_endpoint_good(value: str, expected: tuple[str, int]) -> None:
    assert one_peer(f"endpoint={value}").endpoint == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1.2.3.4",
        "1.2.3.4:",
        ":51820",
        "1.2.3.4:65536",
        "1.2.3.4:-1",
        "1.2.3.4:+80",
        "1.2.3.4: 80",
        "1.2.3.4 :80",
        " 1.2.3.4:80",
        "1.2.3.4:80 ",
        "1.2.3.4:http",
        "[1.2.3.4]:80",  # brackets are for IPv6 only
        "fd00::1:51820",  # IPv6 needs brackets
        "::1:80",
        "[fd00::1]",
        "[fd00::1]:",
        "[fd00::1:80",
        "fd00::1]:80",
        "[]:80",
        "[:80",
        "[fd00::1]]:80",
        "[[fd00::1]]:80",
        "[fd00::g]:80",
        "[fe80::1%]:80",
        "[fe80::1%eth 0]:80",
        "[fe80::1%eth0%1]:80",
        "[fe80::1%a_really_long_zone_name]:80",
        "1.2.3:80",
        "01.2.3.4:80",
        "1.2.3.256:80",
        "example.com:80",
        "localhost:51820",
        "1.2.3.4:80:80",
        "\u0661.2.3.4:80",
        "1.2.3.4:\u0668\u0660",
    ],
)
def test_endpoint_bad(value: str) -> None:
    assert errno_of(peer_lines(f"endpoint={value}")) == EINVAL


@pytest.mark.parametrize(
    ("endpoint", "text"),
    [
        (("1.2.3.4", 51820), "1.2.3.4:51820"),
        (("fd00::1", 51820), "[fd00::1]:51820"),
        (("fe80::1", 0), "[fe80::1]:0"),
    ],
)
def test_format_endpoint(endpoint: tuple[str, int], text: str) -> None:
    assert format_endpoint(endpoint) == text
    assert one_peer(f"endpoint={text}").endpoint == endpoint


@pytest.mark.parametrize(
    ("endpoint", "text"),
    [
        (("fe80::1%eth0", 51820), "[fe80::1]:51820"),
        (("fe80::1%7", 0), "[fe80::1]:0"),
        (("fd00::1%lo", 1), "[fd00::1]:1"),
    ],
)
def test_format_endpoint_drops_the_zone_as_wireguard_go(
    endpoint: tuple[str, int], text: str
) -> None:
    """wireguard-go's Linux bind prints the address without its zone (the zone still picks
    the interface to send on); `wg show` crashes on a zone name it cannot resolve."""
    assert format_endpoint(endpoint) == text


@pytest.mark.parametrize(
    ("endpoint", "text"),
    [
        (("::ffff:a00:1", 51820), "[::ffff:10.0.0.1]:51820"),
        (("::FFFF:a00:1", 51820), "[::ffff:10.0.0.1]:51820"),
        (("::ffff:10.0.0.1", 51820), "[::ffff:10.0.0.1]:51820"),
        (("::ffff:a00:1%eth0", 1), "[::ffff:10.0.0.1]:1"),
        (("::fffe:a00:1", 1), "[::fffe:a00:1]:1"),
    ],
)
def test_format_endpoint_ipv4_mapped_as_wireguard_go(endpoint: tuple[str, int], text: str) -> None:
    """Go's netip writes an IPv4-mapped IPv6 address with its dotted quad."""
    assert format_endpoint(endpoint) == text


# -- allowed IPs


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3/8", "10.0.0.0/8"),  # host bits masked, as wg does
        ("192.168.1.77/32", "192.168.1.77/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("1.2.3.4/0", "0.0.0.0/0"),
        ("fd00::1/64", "fd00::/64"),
        ("FD00::/8", "fd00::/8"),
        ("::/0", "::/0"),
        ("2001:db8::1/128", "2001:db8::1/128"),
        ("::ffff:1.2.3.4/128", "::ffff:1.2.3.4/128"),
    ],
)
def test_allowed_ip_good(value: str, expected: str) -> None:
    (got,) = one_peer(f"allowed_ip={value}").allowed_ips
    assert got == parse_prefix(expected)
    assert got == ipaddress.ip_network(value, strict=False)


@pytest.mark.parametrize(
    "value",
    [
        "10.0.0.1",  # netip.ParsePrefix needs the length
        "10.0.0.0/",
        "/8",
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/08",
        "10.0.0.0/ 8",
        " 10.0.0.0/8",
        "10.0.0.0/8 ",
        "10.0.0.0/255.0.0.0",  # Python would take a netmask; Go would not
        "10.0.0.0/0.255.255.255",
        "10.0.0.0/8/8",
        "fe80::%eth0/64",  # zones have no place in a route
        "010.0.0.0/8",
        "10.0.0/8",
        "10.0.0.0.0/8",
        "garbage/8",
        "fd00::g/64",
        "10.0.0.0/\u0668",
        "10.0.0.0/1000",
    ],
)
def test_allowed_ip_bad(value: str) -> None:
    assert errno_of(peer_lines(f"allowed_ip={value}")) == EINVAL


# -- framing: EPROTO, line and request bounds


@pytest.mark.parametrize(
    "line",
    ["", "listen_port", "private_key " + PRIV.hex(), PRIV.hex(), "true", " "],
)
def test_line_without_equals_is_eproto(line: str) -> None:
    assert errno_of([line]) == EPROTO
    assert errno_of([*peer_lines(), line]) == EPROTO


def test_value_may_contain_equals_but_then_is_invalid() -> None:
    # Split at the first '=', as Go's strings.Cut: the rest is the value.
    assert errno_of(["listen_port==1"]) == EINVAL
    assert errno_of(["listen_port=1=1"]) == EINVAL


def test_line_of_max_length_is_accepted() -> None:
    line = "listen_port=" + "0" * (MAX_LINE - len("listen_port=") - 1) + "7"
    assert len(line.encode()) == MAX_LINE
    assert parse_set([line]).listen_port == 7


def test_line_over_max_length_is_eproto() -> None:
    line = "listen_port=" + "0" * (MAX_LINE - len("listen_port=")) + "7"
    assert errno_of([line]) == EPROTO


def test_line_length_counts_utf8_bytes() -> None:
    fits = "x=" + "é" * ((MAX_LINE - 2) // 2)  # 4096 bytes: a bad key, not a bad line
    assert errno_of([fits]) == EINVAL
    too_long = fits + "é"  # 2049 characters, 4098 bytes
    assert len(too_long) < MAX_LINE
    assert errno_of([too_long]) == EPROTO


def test_non_text_line_is_eproto() -> None:
    assert errno_of([b"listen_port=1"]) == EPROTO  # type: ignore[list-item]


def test_max_set_lines_is_accepted() -> None:
    request = parse_set(itertools.repeat("fwmark=1", MAX_SET_LINES))
    assert request.fwmark == 1


def test_more_than_max_set_lines_is_einval() -> None:
    assert errno_of(itertools.repeat("fwmark=1", MAX_SET_LINES + 1)) == EINVAL  # type: ignore[arg-type]


def test_endless_request_is_cut_off_not_buffered() -> None:
    consumed = 0

    def endless() -> Iterator[str]:
        nonlocal consumed
        yield f"public_key={PUB_A.hex()}"
        while True:
            consumed += 1
            yield "protocol_version=1"  # cheap to parse: the bound, not parsing, is under test

    with pytest.raises(UapiError) as info:
        parse_set(endless())
    assert info.value.errno == EINVAL
    assert consumed == MAX_SET_LINES  # it stopped at the first line over the bound


def test_the_first_bad_line_decides_the_errno() -> None:
    assert errno_of(["listen_port=x", "nonsense"]) == EINVAL
    assert errno_of(["nonsense", "listen_port=x"]) == EPROTO


def test_error_names_the_line() -> None:
    with pytest.raises(UapiError) as info:
        parse_set(["listen_port=1", "fwmark=1", "fwmark=x"])
    assert "line 3" in info.value.message
    assert "fwmark" in info.value.message
    assert "line 3" in str(info.value)


# -- order, repetition, accumulation


def test_allowed_ips_accumulate_in_order() -> None:
    prefixes = ["10.0.0.0/8", "fd00::/8", "192.168.0.0/16", "10.0.0.0/8", "2001:db8::/32"]
    change = one_peer(*(f"allowed_ip={p}" for p in prefixes))
    assert change.allowed_ips == tuple(net(p) for p in prefixes)  # duplicates kept too


def test_replace_allowed_ips_drops_those_added_before_it() -> None:
    # wireguard-go clears the peer's prefixes at the replace line, so earlier adds are lost.
    change = one_peer(
        "allowed_ip=10.0.0.0/8",
        "replace_allowed_ips=true",
        "allowed_ip=10.1.0.0/16",
        "allowed_ip=fd00::/8",
    )
    assert change.replace_allowed_ips
    assert change.allowed_ips == (net("10.1.0.0/16"), net("fd00::/8"))


def test_repeated_keys_last_wins() -> None:
    request = parse_set(
        [
            "listen_port=1",
            "listen_port=2",
            "fwmark=5",
            "fwmark=0",
            f"private_key={PRIV.hex()}",
            f"private_key={ZERO.hex()}",
            *peer_lines(
                "endpoint=1.2.3.4:1",
                "endpoint=[fd00::1]:2",
                "persistent_keepalive_interval=25",
                "persistent_keepalive_interval=0",
                f"preshared_key={PSK.hex()}",
                f"preshared_key={ZERO.hex()}",
            ),
        ]
    )
    assert (request.listen_port, request.fwmark, request.private_key) == (2, 0, ZERO)
    (change,) = request.peers
    assert change.endpoint == ("fd00::1", 2)
    assert change.persistent_keepalive == 0
    assert change.preshared_key == ZERO


def test_peers_keep_their_order_and_repeats() -> None:
    request = parse_set(
        [
            *peer_lines("allowed_ip=10.0.0.1/32", key=PUB_B),
            *peer_lines("allowed_ip=10.0.0.2/32", key=PUB_A),
            *peer_lines("persistent_keepalive_interval=5", key=PUB_B),
        ]
    )
    assert [p.public_key for p in request.peers] == [PUB_B, PUB_A, PUB_B]
    assert request.peers[0].allowed_ips == (net("10.0.0.1/32"),)
    assert request.peers[2] == PeerChange(PUB_B, persistent_keepalive=5)


def test_remove_wins_over_the_rest_of_its_section() -> None:
    # After remove=true wireguard-go configures a throw-away peer: the rest has no effect.
    change = one_peer(
        "endpoint=1.2.3.4:1",
        "remove=true",
        "allowed_ip=10.0.0.0/8",
        "persistent_keepalive_interval=25",
    )
    assert change == PeerChange(PUB_A, remove=True)


def test_lines_after_remove_are_still_validated() -> None:
    assert errno_of(peer_lines("remove=true", "allowed_ip=nonsense")) == EINVAL


def test_update_only_keeps_the_other_fields() -> None:
    change = one_peer("update_only=true", "endpoint=1.2.3.4:9", "allowed_ip=10.0.0.0/8")
    assert change == PeerChange(
        PUB_A, update_only=True, endpoint=("1.2.3.4", 9), allowed_ips=(net("10.0.0.0/8"),)
    )


def test_device_keys_after_a_peer_are_peer_keys() -> None:
    assert errno_of([*peer_lines(), "listen_port=1"]) == EINVAL


def test_a_bad_last_peer_rejects_the_whole_request() -> None:
    lines = [
        f"private_key={PRIV.hex()}",
        "replace_peers=true",
        *peer_lines("allowed_ip=10.0.0.0/8", key=PUB_A),
        *peer_lines("allowed_ip=10.0.0.0/33", key=PUB_B),
    ]
    assert errno_of(lines) == EINVAL  # nothing is returned, so nothing can be applied


# -- zero keys


def test_zero_private_key_means_remove_and_absent_means_unchanged() -> None:
    assert parse_set([f"private_key={ZERO.hex()}"]).private_key == ZERO
    assert parse_set(["listen_port=1"]).private_key is None


def test_zero_preshared_key_means_clear_and_absent_means_unchanged() -> None:
    assert one_peer(f"preshared_key={ZERO.hex()}").preshared_key == ZERO
    assert one_peer("endpoint=1.2.3.4:1").preshared_key is None


def test_zero_public_key_is_a_key_like_any_other() -> None:
    # wireguard-go does not refuse it at parse time; the device decides what it means.
    assert parse_set([f"public_key={ZERO.hex()}"]).peers == (PeerChange(ZERO),)


# -- a realistic request


def test_wg_setconf_request() -> None:
    """What `wg setconf wg0 wg0.conf` sends for a two-peer file (from wg's ipc-uapi.h)."""
    lines = f"""private_key={PRIV.hex()}
listen_port=51820
fwmark=0
replace_peers=true
public_key={PUB_A.hex()}
preshared_key={PSK.hex()}
endpoint=192.0.2.1:51820
persistent_keepalive_interval=25
replace_allowed_ips=true
allowed_ip=10.10.0.2/32
allowed_ip=192.168.50.0/24
allowed_ip=fd10::2/128
public_key={PUB_B.hex()}
endpoint=[2001:db8::7]:51821
replace_allowed_ips=true
allowed_ip=10.10.0.3/32
allowed_ip=10.20.0.0/16
allowed_ip=fd10::3/128
allowed_ip=fd20::/48""".split("\n")
    assert parse_set(lines) == SetRequest(
        private_key=PRIV,
        listen_port=51820,
        fwmark=0,
        replace_peers=True,
        peers=(
            PeerChange(
                PUB_A,
                preshared_key=PSK,
                endpoint=("192.0.2.1", 51820),
                persistent_keepalive=25,
                replace_allowed_ips=True,
                allowed_ips=(net("10.10.0.2/32"), net("192.168.50.0/24"), net("fd10::2/128")),
            ),
            PeerChange(
                PUB_B,
                endpoint=("2001:db8::7", 51821),
                replace_allowed_ips=True,
                allowed_ips=(
                    net("10.10.0.3/32"),
                    net("10.20.0.0/16"),
                    net("fd10::3/128"),
                    net("fd20::/48"),
                ),
            ),
        ),
    )


# -- no key material in errors or reprs


def _leaks(text: str, key: bytes) -> bool:
    """Any 16 consecutive hex digits of the key, in either case."""
    low = text.lower()
    h = key.hex()
    return any(h[i : i + 16] in low for i in range(0, 64 - 16 + 1))


def _bad_lines(priv_hex: str, psk_hex: str) -> list[str]:
    return [
        f"private_key={priv_hex[:-1]}",
        f"private_key={priv_hex}0",
        f"private_key={priv_hex} ",
        f"preshared_key={psk_hex}x",
        f"preshared_key=0x{psk_hex}",
        priv_hex,
        f"{priv_hex}={psk_hex}",
        f"{psk_hex}=1",
        f"endpoint={priv_hex}:80",
        f"endpoint=[{psk_hex}]:80",
        f"allowed_ip={priv_hex}/8",
        f"persistent_keepalive_interval={psk_hex}",
        f"remove={priv_hex}",
        f"protocol_version={psk_hex}",
        f"public_key={priv_hex[1:]}",
        "listen_port=" + priv_hex * 70,  # also too long
    ]


def test_error_messages_never_contain_keys() -> None:
    priv_hex, psk_hex = PRIV.hex(), PSK.hex()
    for bad in _bad_lines(priv_hex, psk_hex):
        for prefix in ([f"private_key={priv_hex}"], peer_lines(f"preshared_key={psk_hex}")):
            with pytest.raises(UapiError) as info:
                parse_set([*prefix, bad])
            for text in (info.value.message, str(info.value), repr(info.value)):
                assert not _leaks(text, PRIV), (bad, text)
                assert not _leaks(text, PSK), (bad, text)


@settings(max_examples=200)
@given(
    priv=st.binary(min_size=32, max_size=32),
    psk=st.binary(min_size=32, max_size=32),
    upper=st.booleans(),
    which=st.integers(min_value=0, max_value=15),
)
def test_error_messages_never_contain_keys_fuzzed(
    priv: bytes, psk: bytes, upper: bool, which: int
) -> None:
    priv_hex = priv.hex().upper() if upper else priv.hex()
    psk_hex = psk.hex().upper() if upper else psk.hex()
    lines = [
        f"private_key={priv_hex}",
        f"public_key={PUB_A.hex()}",
        f"preshared_key={psk_hex}",
        _bad_lines(priv_hex, psk_hex)[which],
    ]
    with pytest.raises(UapiError) as info:
        parse_set(lines)
    assert not _leaks(str(info.value), priv)
    assert not _leaks(str(info.value), psk)


def test_reprs_leave_out_keys() -> None:
    request = parse_set([f"private_key={PRIV.hex()}", *peer_lines(f"preshared_key={PSK.hex()}")])
    assert PRIV not in repr(request).encode("latin-1", "replace")
    assert repr(PRIV) not in repr(request)
    assert repr(PSK) not in repr(request)
    status = DeviceStatus(PRIV, 1, 0, (PeerStatus(PUB_A, PSK, None, 0, 0, 0, 0, ()),))
    assert repr(PRIV) not in repr(status)
    assert repr(PSK) not in repr(status)


# -- format_get


GOLDEN_STATUS = DeviceStatus(
    private_key=PRIV,
    listen_port=51820,
    fwmark=3,
    peers=(
        PeerStatus(
            public_key=PUB_A,
            preshared_key=PSK,
            endpoint=("192.0.2.1", 51820),
            last_handshake_ns=1_700_000_000_123_456_789,
            rx_bytes=1000,
            tx_bytes=2000,
            persistent_keepalive=25,
            allowed_ips=(net("10.10.0.2/32"), net("fd10::/64")),
        ),
        PeerStatus(
            public_key=PUB_B,
            preshared_key=None,
            endpoint=("2001:db8::7", 51821),
            last_handshake_ns=0,
            rx_bytes=0,
            tx_bytes=0,
            persistent_keepalive=0,
            allowed_ips=(),
        ),
        PeerStatus(PUB_B[::-1], None, None, 5, 1, 2, 0, (net("0.0.0.0/0"),)),
    ),
)

GOLDEN_TEXT = f"""private_key={PRIV.hex()}
listen_port=51820
fwmark=3
public_key={PUB_A.hex()}
preshared_key={PSK.hex()}
protocol_version=1
endpoint=192.0.2.1:51820
last_handshake_time_sec=1700000000
last_handshake_time_nsec=123456789
tx_bytes=2000
rx_bytes=1000
persistent_keepalive_interval=25
allowed_ip=10.10.0.2/32
allowed_ip=fd10::/64
public_key={PUB_B.hex()}
preshared_key={"0" * 64}
protocol_version=1
endpoint=[2001:db8::7]:51821
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
persistent_keepalive_interval=0
public_key={PUB_B[::-1].hex()}
preshared_key={"0" * 64}
protocol_version=1
last_handshake_time_sec=0
last_handshake_time_nsec=5
tx_bytes=2
rx_bytes=1
persistent_keepalive_interval=0
allowed_ip=0.0.0.0/0
"""


def test_format_get_matches_wireguard_go() -> None:
    assert format_get(GOLDEN_STATUS) == GOLDEN_TEXT


@pytest.mark.parametrize(
    ("prefix", "text"),
    [
        ("::ffff:10.0.0.1/128", "::ffff:10.0.0.1/128"),
        ("::ffff:0:0/96", "::ffff:0.0.0.0/96"),
        ("::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"),
        ("::fffe:a00:1/128", "::fffe:a00:1/128"),
        ("fd00::/8", "fd00::/8"),
        ("10.0.0.1/32", "10.0.0.1/32"),
    ],
)
def test_allowed_ip_printed_as_wireguard_go(prefix: str, text: str) -> None:
    status = DeviceStatus(None, 0, 0, (PeerStatus(PUB_A, None, None, 0, 0, 0, 0, (net(prefix),)),))
    assert format_get(status).splitlines()[-1] == f"allowed_ip={text}"
    (back,) = parse_get(format_get(status)).peers
    assert back.allowed_ips == (net(prefix),)


def test_format_get_keeps_the_allowed_ips_order() -> None:
    order = (net("fd00::/8"), net("10.0.0.0/8"), net("192.168.1.0/24"), net("10.9.9.9/32"))
    status = DeviceStatus(None, 0, 0, (PeerStatus(PUB_A, None, None, 0, 0, 0, 0, order),))
    lines = [ln for ln in format_get(status).splitlines() if ln.startswith("allowed_ip=")]
    assert lines == [f"allowed_ip={n}" for n in order]


def test_format_get_omits_unset_device_fields() -> None:
    assert format_get(DeviceStatus(None, 0, 0, ())) == ""
    assert format_get(DeviceStatus(ZERO, 0, 0, ())) == ""  # a zero key is no key
    assert format_get(DeviceStatus(None, 1, 0, ())) == "listen_port=1\n"
    assert format_get(DeviceStatus(None, 0, 1, ())) == "fwmark=1\n"


def test_parse_get_golden() -> None:
    assert parse_get(GOLDEN_TEXT) == GOLDEN_STATUS
    assert parse_get(GOLDEN_TEXT + "errno=0\n\n") == GOLDEN_STATUS


def test_parse_get_empty() -> None:
    assert parse_get("") == DeviceStatus(None, 0, 0, ())
    assert parse_get("errno=0\n\n") == DeviceStatus(None, 0, 0, ())


def test_parse_get_zero_keys_are_none() -> None:
    text = f"private_key={ZERO.hex()}\npublic_key={PUB_A.hex()}\npreshared_key={ZERO.hex()}\n"
    status = parse_get(text)
    assert status.private_key is None
    (peer,) = status.peers
    assert peer.preshared_key is None


def test_parse_get_raises_the_reported_errno() -> None:
    with pytest.raises(UapiError) as info:
        parse_get("errno=-5\n\n")
    assert info.value.errno == EIO
    with pytest.raises(UapiError) as info:
        parse_get("errno=22\n\n")  # a positive errno, as some daemons write it
    assert info.value.errno == EINVAL


def test_parse_get_ignores_unknown_keys() -> None:
    # As wg(8) does: a newer daemon may report more than we know.
    text = f"listen_port=1\nfuture_key=x\npublic_key={PUB_A.hex()}\npeer_future=y\n"
    assert parse_get(text) == DeviceStatus(
        None, 1, 0, (PeerStatus(PUB_A, None, None, 0, 0, 0, 0, ()),)
    )


@pytest.mark.parametrize(
    "text",
    [
        "listen_port=1",  # no final newline: truncated
        "listen_port\n",
        "listen_port=x\n",
        "listen_port=65536\n",
        "fwmark=-1\n",
        "private_key=abc\n",
        "endpoint=1.2.3.4:1\n",  # a peer key before any public_key
        "allowed_ip=10.0.0.0/8\n",
        "tx_bytes=1\n",
        "public_key=xyz\n",
        f"public_key={PUB_A.hex()}\nendpoint=[1.2.3.4]:1\n",
        f"public_key={PUB_A.hex()}\nallowed_ip=10.0.0.0/33\n",
        f"public_key={PUB_A.hex()}\ntx_bytes=18446744073709551616\n",
        f"public_key={PUB_A.hex()}\nrx_bytes=-1\n",
        f"public_key={PUB_A.hex()}\nlast_handshake_time_nsec=1000000000\n",
        f"public_key={PUB_A.hex()}\nlast_handshake_time_sec=9223372036854775808\n",
        f"public_key={PUB_A.hex()}\nprotocol_version=2\n",
        f"public_key={PUB_A.hex()}\npreshared_key=00\n",
        f"public_key={PUB_A.hex()}\npersistent_keepalive_interval=65536\n",
        "errno=x\n\n",
        "listen_port=1\n\nfwmark=1\n",  # data after the blank line
        "listen_port=" + "0" * MAX_LINE + "\n",
    ],
)
def test_parse_get_bad(text: str) -> None:
    with pytest.raises(UapiError) as info:
        parse_get(text)
    assert info.value.errno == EPROTO


def test_parse_get_endpoint_port_zero() -> None:
    (peer,) = parse_get(f"public_key={PUB_A.hex()}\nendpoint=1.2.3.4:0\n").peers
    assert peer.endpoint == ("1.2.3.4", 0)


# -- hypothesis: round trips


def _networks(version: Literal[4, 6]) -> st.SearchStrategy[Network]:
    bits = 32 if version == 4 else 128
    return st.builds(
        lambda a, n: ipaddress.ip_network((a, n), strict=False),
        st.ip_addresses(v=version),
        st.integers(min_value=0, max_value=bits),
    )


NETWORKS = st.one_of(_networks(4), _networks(6))
PORTS = st.integers(min_value=0, max_value=65535)
ZONES = st.from_regex(r"[A-Za-z0-9_.@+\-]{1,15}", fullmatch=True)
GET_ENDPOINTS = st.one_of(  # what a get reply can carry: no zone
    st.tuples(st.ip_addresses(v=4).map(str), PORTS),
    st.tuples(st.ip_addresses(v=6).map(str), PORTS),
)
ENDPOINTS = st.one_of(
    GET_ENDPOINTS,
    st.tuples(
        st.builds(lambda a, z: f"{a}%{z}", st.ip_addresses(v=6).map(str), ZONES),
        PORTS,
    ),
)
KEYS = st.binary(min_size=32, max_size=32)
SECRET_KEYS = st.one_of(st.none(), KEYS.filter(any))  # zero reads back as None, as intended

PEER_STATUS = st.builds(
    PeerStatus,
    public_key=KEYS,
    preshared_key=SECRET_KEYS,
    endpoint=st.one_of(st.none(), GET_ENDPOINTS),
    last_handshake_ns=st.integers(min_value=0, max_value=(2**63) * 10**9 - 1),
    rx_bytes=st.integers(min_value=0, max_value=2**64 - 1),
    tx_bytes=st.integers(min_value=0, max_value=2**64 - 1),
    persistent_keepalive=st.integers(min_value=0, max_value=65535),
    allowed_ips=st.lists(NETWORKS, max_size=6).map(tuple),
)
DEVICE_STATUS = st.builds(
    DeviceStatus,
    private_key=SECRET_KEYS,
    listen_port=PORTS,
    fwmark=st.integers(min_value=0, max_value=2**32 - 1),
    peers=st.lists(PEER_STATUS, max_size=4).map(tuple),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(DEVICE_STATUS)
def test_get_round_trip(status: DeviceStatus) -> None:
    text = format_get(status)
    assert all(line for line in text.split("\n")[:-1])  # no blank line inside the body
    assert parse_get(text) == status
    assert parse_get(text + "errno=0\n\n") == status


def _format_set(request: SetRequest) -> list[str]:
    """A test-side writer of set requests, in the order wg(8) writes them."""
    out: list[str] = []
    if request.private_key is not None:
        out.append(f"private_key={request.private_key.hex()}")
    if request.listen_port is not None:
        out.append(f"listen_port={request.listen_port}")
    if request.fwmark is not None:
        out.append(f"fwmark={request.fwmark}")
    if request.replace_peers:
        out.append("replace_peers=true")
    for p in request.peers:
        out.append(f"public_key={p.public_key.hex()}")
        if p.remove:
            out.append("remove=true")
            continue
        if p.update_only:
            out.append("update_only=true")
        if p.preshared_key is not None:
            out.append(f"preshared_key={p.preshared_key.hex()}")
        if p.endpoint is not None:
            host, port = p.endpoint  # with its zone, which a get reply leaves out
            out.append(f"endpoint=[{host}]:{port}" if ":" in host else f"endpoint={host}:{port}")
        if p.persistent_keepalive is not None:
            out.append(f"persistent_keepalive_interval={p.persistent_keepalive}")
        if p.replace_allowed_ips:
            out.append("replace_allowed_ips=true")
        out.extend(f"allowed_ip={n}" for n in p.allowed_ips)
    return out


PEER_CHANGE = st.one_of(
    st.builds(PeerChange, public_key=KEYS, remove=st.just(True)),
    st.builds(
        PeerChange,
        public_key=KEYS,
        update_only=st.booleans(),
        preshared_key=st.one_of(st.none(), KEYS),
        endpoint=st.one_of(st.none(), ENDPOINTS),
        persistent_keepalive=st.one_of(st.none(), st.integers(0, 65535)),
        replace_allowed_ips=st.booleans(),
        allowed_ips=st.lists(NETWORKS, max_size=5).map(tuple),
    ),
)
SET_REQUEST = st.builds(
    SetRequest,
    private_key=st.one_of(st.none(), KEYS),
    listen_port=st.one_of(st.none(), PORTS),
    fwmark=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    replace_peers=st.booleans(),
    peers=st.lists(PEER_CHANGE, max_size=4).map(tuple),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(SET_REQUEST)
def test_set_round_trip(request: SetRequest) -> None:
    assert parse_set(_format_set(request)) == request


# -- hypothesis: fuzzing, only UapiError may come out


def _only_uapi_error(lines: list[str]) -> None:
    try:
        result = parse_set(lines)
    except UapiError as e:
        assert e.errno in (EINVAL, EPROTO)
        assert isinstance(e.message, str)
    else:
        assert isinstance(result, SetRequest)


@settings(max_examples=500)
@given(st.lists(st.text(max_size=80), max_size=12))
def test_fuzz_arbitrary_lines(lines: list[str]) -> None:
    _only_uapi_error(lines)


LONG_LINE = st.builds(
    lambda key, char, n: f"{key}={char * n}",
    st.sampled_from(["listen_port", "allowed_ip", "endpoint", "x", ""]),
    st.characters(),
    st.integers(min_value=MAX_LINE // 4 - 8, max_value=MAX_LINE + 8),
)


@settings(max_examples=300)
@given(st.lists(LONG_LINE, min_size=1, max_size=3))
def test_fuzz_long_lines(lines: list[str]) -> None:
    """Lines around the byte limit, in characters of every UTF-8 width."""
    _only_uapi_error(lines)


SET_KEYS = [
    "private_key",
    "listen_port",
    "fwmark",
    "replace_peers",
    "public_key",
    "remove",
    "update_only",
    "preshared_key",
    "endpoint",
    "persistent_keepalive_interval",
    "replace_allowed_ips",
    "allowed_ip",
    "protocol_version",
]
PLAUSIBLE_VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "true",
            "false",
            "1",
            "0",
            "-1",
            "+1",
            "65535",
            "65536",
            "4294967296",
            "0" * 64,
            PRIV.hex(),
            "1.2.3.4:51820",
            "[fd00::1]:51820",
            "[fe80::1%eth0]:1",
            "[1.2.3.4]:1",
            "10.0.0.0/8",
            "fd00::/8",
            "fe80::%eth0/64",
            "::/0",
        ]
    ),
    st.text(max_size=70),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=60, max_size=68),
    st.text(alphabet="0123456789:.[]/%-+ ", max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.builds(format_endpoint, ENDPOINTS),
    NETWORKS.map(str),
)
VOCAB_LINE = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SET_KEYS), PLAUSIBLE_VALUES)


@settings(max_examples=1000)
@given(st.lists(VOCAB_LINE, max_size=15))
def test_fuzz_vocabulary_lines(lines: list[str]) -> None:
    _only_uapi_error(lines)


@settings(max_examples=500)
@given(st.lists(VOCAB_LINE, max_size=15))
def test_fuzz_vocabulary_in_a_peer_section(lines: list[str]) -> None:
    _only_uapi_error([f"public_key={PUB_A.hex()}", *lines])


@settings(max_examples=500)
@given(st.text(max_size=400))
def test_fuzz_parse_get(text: str) -> None:
    with contextlib.suppress(UapiError):
        parse_get(text)


@settings(max_examples=300)
@given(DEVICE_STATUS, st.data())
def test_fuzz_parse_get_mutated(status: DeviceStatus, data: st.DataObject) -> None:
    """A real reply with one line replaced: parsed or refused, never a crash."""
    lines = format_get(status).split("\n")
    if len(lines) > 1:
        i = data.draw(st.integers(0, len(lines) - 2))
        lines[i] = data.draw(st.one_of(st.text(max_size=60), VOCAB_LINE))
    try:
        parse_get("\n".join(lines))
    except UapiError as e:
        assert e.errno < 0


def test_device_lists_allowed_ips_in_the_order_set_as_wireguard_go() -> None:
    """`wg set ... allowed-ips` order survives into `wg show`, and a prefix set again goes last
    (wireguard-go keeps each peer's prefixes in a list, appending on insert)."""
    from actors.wireguard.apply import apply_set
    from actors.wireguard.device import Device

    device = Device(bytes(range(1, 33)))
    first = ["fd00::/8", "10.0.0.0/8", "192.168.1.0/24", "10.9.9.9/32"]
    apply_set(device, parse_set(peer_lines(*(f"allowed_ip={p}" for p in first))), 0.0)
    apply_set(device, parse_set(peer_lines("allowed_ip=10.0.0.0/8", "allowed_ip=::/0")), 1.0)
    (state,) = device.peer_states()
    assert [str(n) for n in state.allowed_ips] == [
        "fd00::/8",
        "192.168.1.0/24",
        "10.9.9.9/32",
        "10.0.0.0/8",
        "::/0",
    ]
