"""The ready-made stages in ``actors.contrib``: firewall, flow statistics, pcap writer.

The stages are built directly (outside a pipeline a stage gets a private mailbox and no outlet)
and driven through ``process`` / ``process_batch`` / ``stats_extra``; the pcap file is checked
byte by byte and then read back by tshark.
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ippkt import checksum as _checksum
from netns import require_tools

from actors import Packet, Stage
from actors.contrib.firewall import MAX_PORT_SPECS, MAX_RULE_NAME, MAX_RULES, Firewall
from actors.contrib.flowstats import MAX_FLOWS, MAX_TOP, FlowStats
from actors.contrib.pcap import LINKTYPE_RAW, MAX_SNAPLEN, PCAP_MAGIC, PcapWriter
from actors.mailbox import Mailbox
from actors.pipeline_file import PipelineFileError, parse_pipeline
from actors.runner import Runner
from actors.stages.base import GetStats, Outlet
from actors.stages.custom import start_stage
from actors.testing import run

TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
TSHARK = shutil.which("tshark")
TSHARK_TIMEOUT = 60.0  # seconds; tshark's first start builds its dissector tables


# --- packet builders -------------------------------------------------------------------------


def ipv4(src: str, dst: str, proto: int, payload: bytes, frag: int = 0) -> bytes:
    """An IPv4 header (with checksum) and ``payload``; ``frag`` is the flags/offset field."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0x1234,
        frag,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + payload
    )


def ip(src: str, dst: str, proto: int, payload: bytes) -> Packet:
    """An IPv4 or IPv6 packet, by the family of ``src``."""
    if ":" in src:
        return Packet(ipv6(src, dst, proto, payload))
    return Packet(ipv4(src, dst, proto, payload))


def tcp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> Packet:
    header = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    return ip(src, dst, TCP, header + payload)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"") -> Packet:
    return ip(src, dst, UDP, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def icmp(src: str, dst: str, payload: bytes = b"ping") -> Packet:
    """An echo request: ICMP for IPv4, ICMPv6 for IPv6."""
    v6 = ":" in src
    body = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 1, 1) + payload
    if not v6:
        body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
    return ip(src, dst, ICMPV6 if v6 else ICMP, body)


def fragment_v4(src: str, dst: str) -> Packet:
    """A non-first IPv4 fragment of a UDP datagram: its bytes look like ports but are not."""
    return Packet(ipv4(src, dst, UDP, struct.pack("!HHHH", 1000, 53, 8, 0), frag=0x0010))


# --- firewall --------------------------------------------------------------------------------


def test_firewall_without_rules_applies_the_default() -> None:
    allow, deny = Firewall(), Firewall(default="deny")
    packet = udp("10.0.0.1", "10.0.0.2", 1000, 53)
    assert allow.process(packet) is packet
    assert deny.process(packet) is None
    assert allow.stats_extra() == {"firewall": [], "firewall_default": 1, "firewall_rejected": 0}
    assert deny.stats_extra() == {"firewall": [], "firewall_default": 1, "firewall_rejected": 0}


def test_firewall_first_matching_rule_wins() -> None:
    fw = Firewall(
        default="deny",
        rules=[
            {"name": "no-ssh", "action": "deny", "proto": "tcp", "dport": 22},
            {"action": "allow", "proto": "tcp"},
            {"name": "also-tcp", "action": "deny", "proto": "tcp"},  # never reached
            {"action": "allow", "proto": "icmp"},
        ],
    )
    ssh = tcp("10.0.0.1", "10.0.0.2", 40000, 22)
    web = tcp("10.0.0.1", "10.0.0.2", 40000, 80)
    ping = icmp("10.0.0.1", "10.0.0.2")
    dns = udp("10.0.0.1", "10.0.0.2", 40000, 53)
    assert fw.process(ssh) is None
    assert fw.process(web) is web
    assert fw.process(web) is web
    assert fw.process(ping) is ping
    assert fw.process(dns) is None
    assert fw.stats_extra() == {
        "firewall": [
            {"rule": "no-ssh", "action": "deny", "matches": 1},
            {"rule": 1, "action": "allow", "matches": 2},
            {"rule": "also-tcp", "action": "deny", "matches": 0},
            {"rule": 3, "action": "allow", "matches": 1},
        ],
        "firewall_default": 1,
        "firewall_rejected": 0,
    }


def test_firewall_default_allow_with_deny_rules() -> None:
    fw = Firewall(rules=[{"action": "deny", "src": "192.168.0.0/16"}])
    inside = udp("192.168.1.1", "10.0.0.1", 1, 2)
    outside = udp("172.16.0.1", "10.0.0.1", 1, 2)
    assert fw.process(inside) is None
    assert fw.process(outside) is outside
    assert fw.stats_extra()["firewall"][0]["matches"] == 1
    assert fw.stats_extra()["firewall_default"] == 1


def test_firewall_process_batch_drops_and_counts() -> None:
    fw_rules = [{"action": "allow", "proto": "udp", "dport": 53}]
    fw = Firewall(default="deny", rules=fw_rules)
    keep = udp("10.0.0.1", "10.0.0.2", 1000, 53)
    drop = udp("10.0.0.1", "10.0.0.2", 1000, 54)
    assert fw.process_batch((keep, drop, keep, drop, drop)) == [keep, keep]
    assert fw.stats_extra()["firewall_default"] == 3
    result = run(Firewall, [keep, drop, keep, drop, drop], default="deny", rules=fw_rules)
    assert result.passed == [keep, keep] and result.drops == {"dropped": 3}


@pytest.mark.parametrize(
    ("proto", "packet", "matches"),
    [
        ("tcp", tcp("10.0.0.1", "10.0.0.2", 1, 2), True),
        ("tcp", udp("10.0.0.1", "10.0.0.2", 1, 2), False),
        ("udp", udp("fd00::1", "fd00::2", 1, 2), True),
        ("udp", tcp("fd00::1", "fd00::2", 1, 2), False),
        ("icmp", icmp("10.0.0.1", "10.0.0.2"), True),
        ("icmp", icmp("fd00::1", "fd00::2"), False),
        ("icmpv6", icmp("fd00::1", "fd00::2"), True),
        ("icmpv6", icmp("10.0.0.1", "10.0.0.2"), False),
        (17, udp("10.0.0.1", "10.0.0.2", 1, 2), True),
        (47, ip("10.0.0.1", "10.0.0.2", 47, b"gre!"), True),
        (47, udp("10.0.0.1", "10.0.0.2", 1, 2), False),
        ("any", ip("fd00::1", "fd00::2", 47, b"gre!"), True),
        ("any", icmp("10.0.0.1", "10.0.0.2"), True),
    ],
)
def test_firewall_protocol(proto: str | int, packet: Packet, matches: bool) -> None:
    fw = Firewall(default="deny", rules=[{"action": "allow", "proto": proto}])
    assert (fw.process(packet) is packet) is matches


@pytest.mark.parametrize(
    ("rule", "packet", "matches"),
    [
        ({"src": "10.0.0.0/8"}, udp("10.1.2.3", "192.0.2.1", 1, 2), True),
        ({"src": "10.0.0.0/8"}, udp("11.0.0.1", "192.0.2.1", 1, 2), False),
        ({"src": "10.0.0.0/8"}, udp("fd00::1", "fd00::2", 1, 2), False),
        ({"dst": "192.0.2.0/24"}, udp("10.1.2.3", "192.0.2.200", 1, 2), True),
        ({"dst": "192.0.2.0/24"}, udp("10.1.2.3", "192.0.3.1", 1, 2), False),
        ({"src": "10.0.0.7"}, udp("10.0.0.7", "10.0.0.1", 1, 2), True),
        ({"src": "10.0.0.7"}, udp("10.0.0.6", "10.0.0.1", 1, 2), False),
        ({"src": "0.0.0.0/0"}, icmp("203.0.113.9", "10.0.0.1"), True),
        ({"src": "0.0.0.0/0"}, icmp("fd00::1", "fd00::2"), False),
        ({"src": "fd00::/8"}, udp("fd12::1", "2001:db8::1", 1, 2), True),
        ({"src": "fd00::/8"}, udp("fe80::1", "2001:db8::1", 1, 2), False),
        ({"src": "fd00::/8"}, udp("10.0.0.1", "10.0.0.2", 1, 2), False),
        ({"dst": "2001:db8::/32"}, tcp("fd00::1", "2001:db8:ffff::1", 1, 2), True),
        ({"dst": "2001:db8::/32"}, tcp("fd00::1", "2001:db9::1", 1, 2), False),
        ({"dst": "::/0"}, icmp("fd00::1", "fd00::2"), True),
        (
            {"src": "10.0.0.0/24", "dst": "10.0.1.0/24"},
            udp("10.0.0.5", "10.0.1.5", 1, 2),
            True,
        ),
        (
            {"src": "10.0.0.0/24", "dst": "10.0.1.0/24"},
            udp("10.0.1.5", "10.0.0.5", 1, 2),
            False,
        ),
    ],
)
def test_firewall_networks(rule: dict[str, Any], packet: Packet, matches: bool) -> None:
    fw = Firewall(default="deny", rules=[{"action": "allow", **rule}])
    assert (fw.process(packet) is packet) is matches


@pytest.mark.parametrize(
    ("rule", "packet", "matches"),
    [
        ({"dport": 53}, udp("10.0.0.1", "10.0.0.2", 1000, 53), True),
        ({"dport": 53}, udp("10.0.0.1", "10.0.0.2", 53, 1000), False),
        ({"sport": 53}, udp("10.0.0.1", "10.0.0.2", 53, 1000), True),
        ({"dport": "1000-2000"}, tcp("10.0.0.1", "10.0.0.2", 1, 1000), True),
        ({"dport": "1000-2000"}, tcp("10.0.0.1", "10.0.0.2", 1, 2000), True),
        ({"dport": "1000-2000"}, tcp("10.0.0.1", "10.0.0.2", 1, 999), False),
        ({"dport": "1000-2000"}, tcp("10.0.0.1", "10.0.0.2", 1, 2001), False),
        ({"dport": [22, "80-81", 443]}, tcp("fd00::1", "fd00::2", 5, 81), True),
        ({"dport": [22, "80-81", 443]}, tcp("fd00::1", "fd00::2", 5, 443), True),
        ({"dport": [22, "80-81", 443]}, tcp("fd00::1", "fd00::2", 5, 82), False),
        ({"sport": 5, "dport": 443}, tcp("fd00::1", "fd00::2", 5, 443), True),
        ({"sport": 6, "dport": 443}, tcp("fd00::1", "fd00::2", 5, 443), False),
        ({"proto": "udp", "dport": 53}, tcp("10.0.0.1", "10.0.0.2", 1000, 53), False),
        ({"dport": "0-65535"}, icmp("10.0.0.1", "10.0.0.2"), False),
        ({"dport": "0-65535"}, icmp("fd00::1", "fd00::2"), False),
        ({"sport": "0-65535"}, ip("10.0.0.1", "10.0.0.2", 47, b"gre!"), False),
        ({"dport": "0-65535"}, fragment_v4("10.0.0.1", "10.0.0.2"), False),
        ({"dport": "0-65535"}, udp("10.0.0.1", "10.0.0.2", 0, 0), True),
    ],
)
def test_firewall_ports(rule: dict[str, Any], packet: Packet, matches: bool) -> None:
    fw = Firewall(default="deny", rules=[{"action": "allow", **rule}])
    assert (fw.process(packet) is packet) is matches


def test_firewall_v4_and_v6_rules_side_by_side() -> None:
    fw = Firewall(
        default="deny",
        rules=[
            {"name": "v4 dns", "action": "allow", "proto": "udp", "dst": "10.0.0.53", "dport": 53},
            {"name": "v6 web", "action": "allow", "proto": "tcp", "dst": "fd00::80/128"},
        ],
    )
    assert fw.process(udp("10.0.0.1", "10.0.0.53", 9, 53)) is not None
    assert fw.process(udp("fd00::1", "fd00::53", 9, 53)) is None
    assert fw.process(tcp("fd00::1", "fd00::80", 9, 80)) is not None
    assert fw.process(tcp("10.0.0.1", "10.0.0.80", 9, 80)) is None
    counts = {r["rule"]: r["matches"] for r in fw.stats_extra()["firewall"]}
    assert counts == {"v4 dns": 1, "v6 web": 1}
    assert fw.stats_extra()["firewall_default"] == 2


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"default": "drop"}, ValueError, r'default must be "allow", "deny" or "reject"'),
        ({"default": None}, ValueError, r"default must be"),
        ({"rules": {"action": "allow"}}, TypeError, r"rules must be a list of tables"),
        ({"rules": "allow"}, TypeError, r"rules must be a list of tables"),
        ({"rules": ["allow"]}, TypeError, r"rules\[0\] must be a table"),
        ({"rules": [{"action": "allow"}, {}]}, ValueError, r"rules\[1\]: `action` is required"),
        ({"rules": [{"action": "drop"}]}, ValueError, r"rules\[0\]: `action` must be"),
        (
            {"rules": [{"action": "allow"}, {"action": "deny", "port": 22}]},
            ValueError,
            r"rules\[1\]: unknown key 'port'",
        ),
        ({"rules": [{"action": "allow", "proto": "gre"}]}, ValueError, r"unknown `proto` 'gre'"),
        ({"rules": [{"action": "allow", "proto": 256}]}, ValueError, r"`proto` number must be"),
        ({"rules": [{"action": "allow", "proto": -1}]}, ValueError, r"`proto` number must be"),
        ({"rules": [{"action": "allow", "proto": True}]}, TypeError, r"`proto` must be a name"),
        ({"rules": [{"action": "allow", "proto": 6.0}]}, TypeError, r"`proto` must be a name"),
        ({"rules": [{"action": "allow", "src": "10.0.0.0/33"}]}, ValueError, r"`src` is not"),
        ({"rules": [{"action": "allow", "src": "10.0.0.1/24"}]}, ValueError, r"host bits set"),
        ({"rules": [{"action": "allow", "dst": "example.com"}]}, ValueError, r"`dst` is not"),
        ({"rules": [{"action": "allow", "dst": "fd00::/129"}]}, ValueError, r"`dst` is not"),
        ({"rules": [{"action": "allow", "src": 10}]}, TypeError, r"`src` must be a CIDR"),
        (
            {"rules": [{"action": "allow", "src": "10.0.0.0/8", "dst": "fd00::/8"}]},
            ValueError,
            r"`src` is IPv4 but `dst` is IPv6",
        ),
        ({"rules": [{"action": "allow", "dport": 65536}]}, ValueError, r"port must be 0\.\.65535"),
        ({"rules": [{"action": "allow", "dport": -1}]}, ValueError, r"port must be 0\.\.65535"),
        ({"rules": [{"action": "allow", "dport": "80"}]}, ValueError, r"range must look like"),
        ({"rules": [{"action": "allow", "sport": "9-x"}]}, ValueError, r"range must look like"),
        ({"rules": [{"action": "allow", "dport": "90-80"}]}, ValueError, r"low <= high"),
        ({"rules": [{"action": "allow", "dport": "1-70000"}]}, ValueError, r"low <= high"),
        ({"rules": [{"action": "allow", "dport": []}]}, ValueError, r"must not be an empty list"),
        ({"rules": [{"action": "allow", "dport": True}]}, TypeError, r"takes ports"),
        ({"rules": [{"action": "allow", "dport": [80, 8.5]}]}, TypeError, r"takes ports"),
        (
            {"rules": [{"action": "allow", "dport": list(range(MAX_PORT_SPECS + 1))}]},
            ValueError,
            rf"more than {MAX_PORT_SPECS} entries",
        ),
        (
            {"rules": [{"action": "allow", "proto": "icmp", "dport": 80}]},
            ValueError,
            r"need a protocol with ports",
        ),
        (
            {"rules": [{"action": "allow", "proto": 47, "sport": 80}]},
            ValueError,
            r"need a protocol with ports",
        ),
        ({"rules": [{"action": "allow", "name": 7}]}, TypeError, r"`name` must be a string"),
        ({"rules": [{"action": "allow", "name": ""}]}, ValueError, r"`name` must be 1\.\."),
        (
            {"rules": [{"action": "allow", "name": "x" * (MAX_RULE_NAME + 1)}]},
            ValueError,
            r"`name` must be 1\.\.",
        ),
        (
            {"rules": [{"action": "allow"}] * (MAX_RULES + 1)},
            ValueError,
            rf"at most {MAX_RULES} rules",
        ),
        ({"default": "allow", "rule": []}, TypeError, r"rule"),
    ],
)
def test_firewall_invalid_options(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Firewall(**options)


def test_firewall_options_from_a_pipeline_file() -> None:
    """The documented TOML layout loads; a bad rule is a one-line start-up error."""
    inbound, _ = parse_pipeline(
        """
        [[inbound]]
        use = "actors.contrib.firewall:Firewall"
        options = { default = "deny", rules = [
            { name = "ssh", action = "allow", proto = "tcp", src = "10.8.0.0/29", dport = 22 },
            { action = "allow", proto = "icmp" },
            { action = "allow", proto = "udp", dport = [53, "5000-5100"] },
        ] }
        """
    )
    assert inbound[0].name == "firewall"
    assert len(inbound[0].options["rules"]) == 3
    with pytest.raises(PipelineFileError) as info:
        parse_pipeline(
            '[[inbound]]\nuse = "actors.contrib.firewall:Firewall"\n'
            'options = { rules = [{ action = "allow", prot = "tcp" }] }\n'
        )
    assert "\n" not in str(info.value)
    assert "rules[0]" in str(info.value) and "'prot'" in str(info.value)


_ADDRESSES_V4 = st.sampled_from(["10.0.0.1", "10.0.0.2", "192.168.1.9", "8.8.8.8", "0.0.0.0"])
_ADDRESSES_V6 = st.sampled_from(["fd00::1", "fd00::2", "2001:db8::7", "fe80::1", "::"])


@st.composite
def _packets(draw: st.DrawFn) -> Packet:
    """Valid IPv4/IPv6 packets with any protocol, fragments, extension headers and payloads
    that may be too short to hold ports."""
    payload = draw(st.binary(max_size=64))
    proto = draw(st.sampled_from([TCP, UDP, ICMP, ICMPV6, 0, 43, 44, 60, 47, 132, 136, 255]))
    if draw(st.booleans()):
        frag = draw(st.sampled_from([0, 0x2000, 0x0001, 0x4000, 0x1FFF]))
        return Packet(ipv4(draw(_ADDRESSES_V4), draw(_ADDRESSES_V4), proto, payload, frag))
    return Packet(ipv6(draw(_ADDRESSES_V6), draw(_ADDRESSES_V6), proto, payload))


_FUZZ_RULES: list[dict[str, Any]] = [
    {"action": "deny", "proto": "tcp", "dport": [22, "6000-6010"]},
    {"action": "allow", "src": "10.0.0.0/8", "sport": "0-1023"},
    {"action": "deny", "dst": "fd00::/8", "proto": "udp"},
    {"action": "allow", "src": "2001:db8::/32", "dst": "::/0"},
    {"action": "deny", "proto": 47},
    {"action": "allow", "proto": "icmpv6"},
    {"action": "deny", "sport": 0, "dport": "0-65535"},
    {"action": "allow", "dst": "8.8.8.8/32", "proto": "any"},
]


@settings(max_examples=300, deadline=None)
@given(packets=st.lists(_packets(), max_size=16), default=st.sampled_from(["allow", "deny"]))
def test_firewall_never_raises_on_valid_packets(packets: list[Packet], default: str) -> None:
    fw = Firewall(default=default, rules=_FUZZ_RULES)
    for packet in packets:
        result = fw.process(packet)
        assert result is None or result is packet
    stats = fw.stats_extra()
    assert sum(r["matches"] for r in stats["firewall"]) + stats["firewall_default"] == len(packets)


# --- flow statistics -------------------------------------------------------------------------


def test_flowstats_counts_per_flow_and_passes_packets_on() -> None:
    fs = FlowStats()
    web = [tcp("10.0.0.1", "10.0.0.2", 1234, 80, b"x" * n) for n in (0, 100, 200)]
    dns = udp("fd00::1", "fd00::53", 5353, 53, b"q" * 10)
    ping = icmp("10.0.0.1", "10.0.0.9")
    batch = (*web, dns, ping, dns)
    assert fs.process_batch(batch) == list(batch)
    assert fs.process(ping) is ping
    stats = fs.stats_extra()
    assert stats["flows"] == 3
    assert stats["flows_evicted"] == 0
    assert stats["top_talkers"] == [
        {
            "flow": "10.0.0.1:1234 -> 10.0.0.2:80 tcp",
            "packets": 3,
            "bytes": sum(len(p) for p in web),
        },
        {"flow": "[fd00::1]:5353 -> [fd00::53]:53 udp", "packets": 2, "bytes": 2 * len(dns)},
        {"flow": "10.0.0.1 -> 10.0.0.9 icmp", "packets": 2, "bytes": 2 * len(ping)},
    ]


def test_flowstats_direction_and_ports_make_distinct_flows() -> None:
    fs = FlowStats()
    fs.process_batch(
        (
            udp("10.0.0.1", "10.0.0.2", 1, 2),
            udp("10.0.0.2", "10.0.0.1", 2, 1),
            udp("10.0.0.1", "10.0.0.2", 1, 3),
            tcp("10.0.0.1", "10.0.0.2", 1, 2),
            udp("10.0.0.1", "10.0.0.2", 1, 2),
        )
    )
    assert fs.stats_extra()["flows"] == 4


def test_flowstats_top_n_sorted_by_bytes() -> None:
    fs = FlowStats(top=2)
    sizes = {1: 50, 2: 400, 3: 10, 4: 200}
    for port, size in sizes.items():
        fs.process(udp("10.0.0.1", "10.0.0.2", port, 9, b"z" * size))
    top = fs.stats_extra()["top_talkers"]
    assert [t["flow"] for t in top] == [
        "10.0.0.1:2 -> 10.0.0.2:9 udp",
        "10.0.0.1:4 -> 10.0.0.2:9 udp",
    ]
    assert [t["bytes"] for t in top] == [28 + 400, 28 + 200]
    assert fs.stats_extra()["flows"] == 4


def test_flowstats_evicts_least_recently_seen() -> None:
    fs = FlowStats(max_flows=3)
    flows = [udp("10.0.0.1", "10.0.0.2", port, 9) for port in range(1, 6)]
    fs.process_batch(tuple(flows[:3]))  # table: 1 2 3
    fs.process(flows[0])  # 1 becomes the most recent: 2 3 1
    fs.process_batch((flows[3], flows[4]))  # evicts 2, then 3
    stats = fs.stats_extra()
    assert stats["flows"] == 3
    assert stats["flows_evicted"] == 2
    assert len(fs.flows) <= 3
    assert sorted(t["flow"] for t in stats["top_talkers"]) == [
        "10.0.0.1:1 -> 10.0.0.2:9 udp",
        "10.0.0.1:4 -> 10.0.0.2:9 udp",
        "10.0.0.1:5 -> 10.0.0.2:9 udp",
    ]
    assert {t["flow"]: t["packets"] for t in stats["top_talkers"]}[
        "10.0.0.1:1 -> 10.0.0.2:9 udp"
    ] == 2


def test_flowstats_table_stays_bounded_under_many_flows() -> None:
    fs = FlowStats(top=5, max_flows=100)
    for i in range(1000):
        fs.process(udp("10.0.0.1", "10.0.0.2", i + 1, 9))
        assert len(fs.flows) <= 100
    stats = fs.stats_extra()
    assert stats["flows"] == 100
    assert stats["flows_evicted"] == 900
    assert len(stats["top_talkers"]) == 5


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"top": 0}, ValueError, rf"top must be 1\.\.{MAX_TOP}, not 0"),
        ({"top": MAX_TOP + 1}, ValueError, rf"top must be 1\.\.{MAX_TOP}"),
        ({"top": "10"}, TypeError, r"top must be an integer, not str"),
        ({"top": True}, TypeError, r"top must be an integer, not bool"),
        ({"max_flows": 0}, ValueError, rf"max_flows must be 1\.\.{MAX_FLOWS}, not 0"),
        ({"max_flows": MAX_FLOWS + 1}, ValueError, r"max_flows must be 1\.\."),
        ({"max_flows": 1.5}, TypeError, r"max_flows must be an integer, not float"),
        ({"flows": 10}, TypeError, r"flows"),
    ],
)
def test_flowstats_invalid_options(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        FlowStats(**options)


# --- pcap writer -----------------------------------------------------------------------------

_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")


def _records(data: bytes) -> list[tuple[float, int, int, bytes]]:
    """(timestamp, captured length, original length, bytes) of each record after the header."""
    out = []
    offset = _FILE_HEADER.size
    while offset < len(data):
        sec, usec, incl, orig = _RECORD_HEADER.unpack_from(data, offset)
        offset += _RECORD_HEADER.size
        assert usec < 1_000_000
        out.append((sec + usec / 1e6, incl, orig, data[offset : offset + incl]))
        offset += incl
    assert offset == len(data)
    return out


def _sample_packets() -> list[Packet]:
    return [
        udp("10.0.0.1", "10.0.0.2", 40000, 53, b"dns?"),
        tcp("192.168.7.1", "192.168.7.2", 40001, 443, b"hello"),
        icmp("10.9.8.7", "10.9.8.6"),
        udp("fd00::1", "fd00::2", 40002, 5353, b"mdns"),
    ]


def test_pcap_writes_header_and_records(tmp_path: Path) -> None:
    path = tmp_path / "capture.pcap"
    writer = PcapWriter(path=str(path))
    packets = _sample_packets()
    before = time.time()
    writer.on_start()
    assert path.read_bytes() == (
        b"\xd4\xc3\xb2\xa1"  # 0xa1b2c3d4, little-endian
        + b"\x02\x00\x04\x00"  # version 2.4
        + b"\x00" * 8  # thiszone, sigfigs
        + b"\xff\xff\x00\x00"  # snaplen 65535
        + b"\x65\x00\x00\x00"  # LINKTYPE_RAW = 101
    )
    assert writer.process_batch(tuple(packets[:3])) == packets[:3]
    # flushed at the end of the batch: readable before the file is closed
    assert len(_records(path.read_bytes())) == 3
    assert writer.process(packets[3]) is packets[3]
    writer.on_stop()
    after = time.time()
    data = path.read_bytes()
    assert _FILE_HEADER.unpack_from(data) == (PCAP_MAGIC, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
    records = _records(data)
    assert [r[3] for r in records] == [p.data for p in packets]
    for stamp, incl, orig, body in records:
        assert int(before) <= stamp <= after + 1e-6
        assert incl == orig == len(body)
    assert writer.stats_extra() == {"pcap_packets": 4, "pcap_path": str(path)}
    writer.on_stop()  # a second stop is harmless


def test_pcap_snaplen_truncates_records(tmp_path: Path) -> None:
    path = tmp_path / "short.pcap"
    writer = PcapWriter(path=str(path), snaplen=24)
    big = udp("10.0.0.1", "10.0.0.2", 1, 2, b"p" * 500)
    small = icmp("10.0.0.1", "10.0.0.2", b"")
    writer.on_start()
    assert writer.process_batch((big, small)) == [big, small]
    writer.on_stop()
    data = path.read_bytes()
    assert _FILE_HEADER.unpack_from(data)[5] == 24
    assert [(incl, orig, body) for _, incl, orig, body in _records(data)] == [
        (24, len(big), big.data[:24]),
        (24, len(small), small.data[:24]),
    ]


def test_pcap_truncates_on_first_start_and_appends_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "restart.pcap"
    path.write_bytes(b"old contents")
    first = PcapWriter(path=str(path))
    first.on_start()
    first.process(udp("10.0.0.1", "10.0.0.2", 1, 2))
    # The supervisor's second incarnation of the stage keeps what the first captured.
    second_runner = Runner(lambda: PcapWriter(path=str(path)), "pcap", incarnation=2)
    second = second_runner.stage
    assert isinstance(second, PcapWriter)
    second.on_start()
    second.process(udp("10.0.0.1", "10.0.0.2", 3, 4))
    second.on_stop()
    first.on_stop()
    data = path.read_bytes()
    assert data.count(struct.pack("<I", PCAP_MAGIC)) == 1
    assert [Packet(r[3]).src_port for r in _records(data)] == [1, 3]


def test_pcap_in_a_running_actor(tmp_path: Path) -> None:
    """Started as an actor: on_start opens, batches are written and passed on, stop closes."""
    path = tmp_path / "live.pcap"
    inbox, downstream = Mailbox("pcap"), Mailbox("next")
    ref = start_stage(PcapWriter, inbox, Outlet(downstream), options={"path": str(path)})
    try:
        packets = tuple(_sample_packets())
        assert inbox.push(packets)
        deadline = time.monotonic() + 10.0
        while downstream.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not downstream.empty(), "the batch never reached the next stage"
        assert tuple(downstream.take()) == packets  # type: ignore[arg-type]  # then ask
        snapshot = inbox.ask(GetStats(), timeout=10.0)
        assert dict(snapshot.extra)["pcap_packets"] == len(packets)
        assert snapshot.packets_out == len(packets)
    finally:
        ref.stop(timeout=10.0)
    assert [r[3] for r in _records(path.read_bytes())] == [p.data for p in packets]


def test_pcap_open_failure_raises_in_on_start(tmp_path: Path) -> None:
    writer = PcapWriter(path=str(tmp_path / "missing-dir" / "x.pcap"))  # __init__ never opens
    assert not (tmp_path / "missing-dir").exists()
    with pytest.raises(FileNotFoundError):
        writer.on_start()


def test_pcap_process_before_start_is_an_error(tmp_path: Path) -> None:
    writer = PcapWriter(path=str(tmp_path / "x.pcap"))
    with pytest.raises(RuntimeError, match="not started"):
        writer.process(icmp("10.0.0.1", "10.0.0.2"))
    assert not (tmp_path / "x.pcap").exists()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({}, TypeError, r"path"),
        ({"path": ""}, ValueError, r"path must not be empty"),
        ({"path": "   "}, ValueError, r"path must not be empty"),
        ({"path": 42}, TypeError, r"path must be a string, not int"),
        ({"path": None}, TypeError, r"path must be a string, not NoneType"),
        ({"path": "a\0b"}, ValueError, r"NUL"),
        ({"path": "x" * 5000}, ValueError, r"path is longer than"),
        ({"path": "x.pcap", "snaplen": 0}, ValueError, rf"snaplen must be 1\.\.{MAX_SNAPLEN}"),
        ({"path": "x.pcap", "snaplen": MAX_SNAPLEN + 1}, ValueError, r"snaplen must be 1\.\."),
        ({"path": "x.pcap", "snaplen": "64"}, TypeError, r"snaplen must be an integer"),
    ],
)
def test_pcap_invalid_options(
    options: dict[str, Any],
    error: type[Exception],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        PcapWriter(**options)
    assert list(tmp_path.iterdir()) == []  # options are checked without touching the disk


def test_pcap_constructor_does_not_touch_the_filesystem(tmp_path: Path) -> None:
    PcapWriter(path=str(tmp_path / "later.pcap"))
    assert list(tmp_path.iterdir()) == []


def _tshark(path: Path, *fields: str) -> list[list[str]]:
    assert TSHARK is not None
    result = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "separator=|"]
        + [arg for field in fields for arg in ("-e", field)],
        capture_output=True,
        text=True,
        timeout=TSHARK_TIMEOUT,
        check=False,
    )
    # tshark warns on stderr when run as root; only the exit status and stdout matter.
    assert result.returncode == 0, result.stderr
    return [line.split("|") for line in result.stdout.splitlines()]


def test_pcap_file_reads_back_in_tshark(tmp_path: Path) -> None:
    require_tools("tshark")  # a skip here fails under CI=true
    path = tmp_path / "tshark.pcap"
    writer = PcapWriter(path=str(path))
    packets = _sample_packets()
    writer.on_start()
    writer.process_batch(tuple(packets[:2]))
    writer.process_batch(tuple(packets[2:]))
    writer.on_stop()
    rows = _tshark(
        path,
        "frame.len",
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "udp.dstport",
        "tcp.dstport",
        "icmp.type",
    )
    assert rows == [
        [str(len(packets[0])), "10.0.0.1", "10.0.0.2", "", "", "53", "", ""],
        [str(len(packets[1])), "192.168.7.1", "192.168.7.2", "", "", "", "443", ""],
        [str(len(packets[2])), "10.9.8.7", "10.9.8.6", "", "", "", "", "8"],
        [str(len(packets[3])), "", "", "fd00::1", "fd00::2", "5353", "", ""],
    ]


def test_pcap_truncated_records_read_back_in_tshark(tmp_path: Path) -> None:
    require_tools("tshark")
    path = tmp_path / "snap.pcap"
    writer = PcapWriter(path=str(path), snaplen=40)
    packet = udp("10.1.1.1", "10.2.2.2", 7, 4242, b"y" * 300)
    writer.on_start()
    writer.process_batch((packet,))
    writer.on_stop()
    assert _tshark(path, "frame.len", "frame.cap_len", "ip.src", "udp.dstport") == [
        [str(len(packet)), "40", "10.1.1.1", "4242"]
    ]


def test_contrib_stages_are_public_stages() -> None:
    for cls in (PcapWriter, Firewall, FlowStats):
        assert issubclass(cls, Stage)
        assert cls.__doc__ and cls.__module__.startswith("actors.contrib.")


def test_pcap_gives_each_worker_process_a_file_of_its_own(tmp_path: Path) -> None:
    """With --workers every worker runs an instance: one file each, never one file shared."""
    from actors.runner import Runner

    path = tmp_path / "capture.pcap"
    runners = [Runner(lambda: PcapWriter(path=str(path)), "pcap", worker=(w, 2)) for w in (0, 1)]
    for runner in runners:
        runner.start()
    packets = _sample_packets()
    assert runners[1].stage.process(packets[0]) is packets[0]
    for runner in runners:
        runner.stage.on_stop()
    assert not path.exists()
    assert len(_records((tmp_path / "capture.w0.pcap").read_bytes())) == 0
    assert len(_records((tmp_path / "capture.w1.pcap").read_bytes())) == 1
    assert runners[1].stage.stats_extra()["pcap_path"] == str(tmp_path / "capture.w1.pcap")
