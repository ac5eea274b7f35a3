"""Packets above 1280 bytes from the host, through a real TUN device at MTU 1420 in a
namespace, read by ``TunDevice.read_batch`` (the one read path of both modes), with and without
the virtio-net header: fragments that reassemble to what the sockets sent, and ICMP replies
that the host's kernel takes (its path MTU drops to 1280)."""

from __future__ import annotations

import json
import struct
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from ippkt import reassemble
from netns import Netns

pytestmark = pytest.mark.netns

PROBE = Path(__file__).with_name("tun_oversize_probe.py")
ROOT = PROBE.parent.parent
PLAIN_SIZES = {9001: 1280, 9002: 1281, 9003: 1392, 9004: 1420}
GSO_PORT, GSO_DATAGRAM = 9005, 1392


@pytest.mark.parametrize("mode", ["plain", "vnet"])
def test_host_packets_above_1280_through_a_real_tun(mode: str) -> None:
    with Netns() as ns:
        result = ns.run(
            sys.executable, PROBE, mode, timeout=60, env_extra={"PYTHONPATH": str(ROOT)}
        )
    found = json.loads(result.stdout)
    datas = [bytes.fromhex(h) for h in found["packets"]]
    assert all(len(d) <= 1280 for d in datas)
    v4 = [d for d in datas if d[0] >> 4 == 4]
    by_id: defaultdict[bytes, list[bytes]] = defaultdict(list)
    for d in v4:
        by_id[d[4:6]].append(d)
    datagrams = [reassemble(parts) for parts in by_id.values()]
    sizes: defaultdict[int, list[int]] = defaultdict(list)
    for dgram in datagrams:
        ihl = (dgram[0] & 0x0F) * 4
        port, length = struct.unpack_from("!2xHH", dgram, ihl)
        assert length == len(dgram) - ihl  # the UDP datagram whole again
        sizes[port].append(len(dgram))
    assert {p: s for p, s in sizes.items() if p != GSO_PORT} == {
        p: [s] for p, s in PLAIN_SIZES.items()
    }
    assert sizes[GSO_PORT] == [GSO_DATAGRAM] * 2
    # the 1280-byte one is the only packet that was not cut
    assert sum(len(parts) == 1 for parts in by_id.values()) == 1
    assert found["counts"]["fragmented"] == 5 and found["counts"]["fragments"] == 10
    # DF and IPv6: dropped, answered, and the answers lowered the host's path MTU
    assert found["drops"] == {"oversize": 2}
    kinds = sorted(
        (r[:1].hex(), r[20:22].hex() if r[0] >> 4 == 4 else r[40:41].hex())
        for r in map(bytes.fromhex, found["replies"])
    )
    assert kinds == [("45", "0304"), ("60", "02")]
    assert (found["ip_mtu"], found["ipv6_mtu"]) == (1280, 1280)
    if mode == "vnet" and found["offloads"]["tun_uso"] == "on":
        assert found["counts"].get("gso_frames", 0) >= 1
