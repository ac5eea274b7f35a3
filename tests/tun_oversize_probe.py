"""Run inside a test namespace: a real TUN device at MTU 1420, packets sent to it by the host's
own sockets, read back with ``TunDevice.read_batch`` as both modes read it.

    tun_oversize_probe.py plain|vnet

Sends, to 10.66.0.2 / fd66::2 (routed into the device):
- UDP over IPv4 without DF, datagrams of 1280, 1281, 1392 and 1420 bytes (ports 9001-9004);
- one UDP_SEGMENT send of two 1392-byte datagrams without DF (port 9005): with ``vnet`` and
  USO this reaches the reader as one GSO frame;
- UDP over IPv4 with DF and over IPv6, 1392 bytes each, from connected sockets: their ICMP
  replies are written back into the device, and the sockets' path MTU is read afterwards.

Prints one JSON object: the packets read for those addresses (hex), the ICMP replies (hex),
the drops and counts, and the two path MTUs. Bounded by READ_DEADLINE.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter

from actors.io.offloads import OffloadPlan
from actors.io.tun import TunDevice
from actors.packet import Packet

READ_DEADLINE = 10.0  # seconds to wait for the packets sent
IFACE = "tov0"
DST4, DST6 = "10.66.0.2", "fd66::2"
PLAIN_SIZES = {9001: 1280, 9002: 1281, 9003: 1392, 9004: 1420}
GSO_PORT, GSO_DATAGRAM = 9005, 1392
DF_PORT, V6_PORT, BIG = 9006, 9007, 1392
IP_MTU_DISCOVER, IP_PMTUDISC_DONT, IP_PMTUDISC_DO, IP_MTU = 10, 0, 2, 14
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU = 23, 2, 24
UDP_SEGMENT = 103


def main(mode: str) -> None:
    wanted = frozenset({"tun_tso", "tun_uso"}) if mode == "vnet" else frozenset()
    tun = TunDevice(IFACE, offloads=OffloadPlan(wanted=wanted))
    tun.configure([ipaddress.ip_interface("10.66.0.1/24"), ipaddress.ip_interface("fd66::1/64")])
    subprocess.run(["ip", "link", "set", IFACE, "mtu", "1420"], check=True)
    reader = tun.make_reader()
    drops: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    packets: list[Packet] = []
    replies: list[Packet] = []

    def read_until(done: object) -> None:
        deadline = time.monotonic() + READ_DEADLINE
        while time.monotonic() < deadline and not done():  # type: ignore[operator]
            if tun.wait_readable(0.05):
                for p in tun.read_batch(64, drops, replies, reader, counts):
                    if str(p.dst) in (DST4, DST6):
                        packets.append(p)

    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    for port, size in PLAIN_SIZES.items():
        plain.sendto(os.urandom(size - 28), (DST4, port))
    gso = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gso.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    gso.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, GSO_DATAGRAM - 28)
    gso.sendto(os.urandom(2 * (GSO_DATAGRAM - 28)), (DST4, GSO_PORT))
    expected = 1 + 2 * 3 + 2 * 2  # one whole, then two fragments for each of the rest
    read_until(lambda: len(packets) >= expected)

    df = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    df.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    df.connect((DST4, DF_PORT))
    df.send(os.urandom(BIG - 28))
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v6.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
    v6.connect((DST6, V6_PORT))
    v6.send(os.urandom(BIG - 48))
    read_until(lambda: len(replies) >= 2)
    for frame, _, _ in tun.frames([r.data for r in replies]):
        os.write(tun.fd, frame)

    def path_mtus() -> tuple[int, int]:
        return (
            df.getsockopt(socket.IPPROTO_IP, IP_MTU),
            v6.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU),
        )

    deadline = time.monotonic() + READ_DEADLINE
    while time.monotonic() < deadline and path_mtus() != (1280, 1280):
        time.sleep(0.05)
    ip_mtu, ipv6_mtu = path_mtus()
    print(
        json.dumps(
            {
                "packets": [p.data.hex() for p in packets],
                "replies": [r.data.hex() for r in replies],
                "drops": dict(drops),
                "counts": dict(counts),
                "ip_mtu": ip_mtu,
                "ipv6_mtu": ipv6_mtu,
                "offloads": tun.offloads,
            }
        )
    )
    tun.close()


if __name__ == "__main__":
    main(sys.argv[1])
