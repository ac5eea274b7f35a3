"""Kernel offloads, live: wgactors with TUN TSO/USO/GRO and UDP GSO/GRO against wireguard-go.

Each test runs the real daemon in a namespace against a real wireguard-go in another, with
kernel TCP, UDP and ICMP crossing the tunnel, and checks the data end to end (SHA-256 of every
TCP transfer), that the offloads were really used (the stages' counters in the final stats
line), and that an offload the kernel refuses is reported and the tunnel carries on without it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from netns import Netns, WireguardGo
from wgactors_proc import LAUNCHER, ROOT, Wgactors

from actors.io.offloads import ALL_OFFLOADS, OFFLOADS_ENV, REFUSE_ENV
from actors.lab import reachable, wireguard_go_peering

pytestmark = pytest.mark.netns

MODES = [pytest.param((), id="actors"), pytest.param(("--single-threaded",), id="single")]
A4, B4, A6, B6 = "10.98.0.1", "10.98.0.2", "fd98::1", "fd98::2"
TCPCHECK = str(ROOT / "tests" / "tcpcheck.py")
UDPCHECK = str(ROOT / "tests" / "udpcheck.py")
TRANSFER = 4 * 1024 * 1024  # bytes per TCP transfer: dozens of GSO frames, about a second
SMALL_TRANSFER = 2 * 1024 * 1024
USO_SEGMENTS = 8  # datagrams sent in one UDP_SEGMENT send across the tunnel
USO_SIZE = 1000
USO_BURSTS = 3  # UDP is lossy, and the tunnel is loaded meanwhile: one whole burst must arrive

# One sendmsg with UDP_SEGMENT: the kernel hands the TUN reader one GSO_UDP_L4 frame (with USO)
USO_SENDER = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, {USO_SIZE})
for burst in range({USO_BURSTS}):
    data = b"".join(
        f"uso{{burst}}-{{i:02d}}".encode().ljust({USO_SIZE}, b".") for i in range({USO_SEGMENTS})
    )
    s.sendto(data, (sys.argv[1], int(sys.argv[2])))
"""


def start_pair(
    netns_pair, tmp_path: Path, iface: str, *mode: str, peer_mtu: int = 1280, env=None
) -> tuple[WireguardGo, Wgactors]:
    """wireguard-go in b (MTU ``peer_mtu``) and wgactors in a (MTU 1280), IPv4 and IPv6
    inside, already past the handshake."""
    wggo, conf, _ = wireguard_go_peering(
        netns_pair.b,
        tmp_path,
        iface,
        ours=[f"{A4}/24", f"{A6}/64"],
        theirs=[f"{B4}/24", f"{B6}/64"],
        their_underlay=netns_pair.addr_b4,
        mtu=peer_mtu,
    )
    wggo.start()
    # every offload asked for, whatever the defaults: each is tested here
    daemon = Wgactors(
        netns_pair.a, conf, *mode, env={OFFLOADS_ENV: ",".join(ALL_OFFLOADS), **(env or {})}
    )
    return wggo, daemon


def tcp_transfer(server_ns: Netns, client_ns: Netns, addr: str, size: int, port: int) -> None:
    """``size`` bytes over TCP to ``addr``; both ends' SHA-256 must agree."""
    server = server_ns.popen(
        sys.executable, TCPCHECK, "serve", str(port), stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        result = client_ns.run(sys.executable, TCPCHECK, "send", addr, port, size, timeout=60)
        local, remote = result.stdout.split()
        assert local == remote, f"checksum mismatch to {addr}"
        assert server.wait(10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def final_stats(log: str) -> str:
    found = re.findall(r"final stats: (.*)", log)
    assert found, log[-3000:]
    return found[-1]


def counter(stats: str, name: str) -> int:
    return sum(int(n) for n in re.findall(rf"'{name}': (\d+)", stats))


def both_ways(netns_pair, families=("v4", "v6"), size: int = TRANSFER) -> None:
    a, b = netns_pair.a, netns_pair.b
    port = 5301
    for family in families:
        theirs, ours = (B4, A4) if family == "v4" else (B6, A6)
        tcp_transfer(b, a, theirs, size, port)  # upload: TSO frames split by our reader
        tcp_transfer(a, b, ours, size, port + 1)  # download: runs joined by our writer
        port += 2


@pytest.mark.parametrize("peer_mtu", [1280, 1420])
@pytest.mark.parametrize("mode", MODES)
def test_tcp_both_ways_v4_v6_with_offloads(netns_pair, tmp_path: Path, mode, peer_mtu) -> None:
    wggo, daemon = start_pair(netns_pair, tmp_path, "wgo0", *mode, peer_mtu=peer_mtu)
    with wggo, daemon:
        assert reachable(netns_pair.a, B4, count=1) and reachable(netns_pair.a, B6, count=1), (
            daemon.log()
        )
        both_ways(netns_pair)
        assert daemon.terminate() == 0
    stats = final_stats(daemon.log())
    assert "tun_tso=on" in stats and "tun_gro=on" in stats, stats
    assert counter(stats, "gso_frames") > 0 and counter(stats, "gso_packets") > counter(
        stats, "gso_frames"
    ), stats
    assert counter(stats, "gro_packets") > counter(stats, "gro_frames") > 0, stats
    assert counter(stats, "bad_gso") == 0, stats
    assert "udp_gso=on" in stats and "udp_gro=on" in stats, stats
    assert counter(stats, "udp_gso_datagrams") > counter(stats, "udp_gso_sends") > 0, stats


def test_mixed_tcp_udp_icmp_flow(netns_pair, tmp_path: Path) -> None:
    """TCP both ways while UDP (plain and a UDP_SEGMENT burst) and ICMP cross the tunnel."""
    wggo, daemon = start_pair(netns_pair, tmp_path, "wgo1")
    a, b = netns_pair.a, netns_pair.b
    with wggo, daemon:
        assert reachable(a, B4, count=1), daemon.log()
        listener = b.popen(
            sys.executable, UDPCHECK, "listen", "7000", "8", stdout=subprocess.PIPE, text=True
        )
        server = b.popen(
            sys.executable, TCPCHECK, "serve", "5401", stdout=subprocess.PIPE, text=True
        )
        try:
            assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
            assert server.stdout is not None and server.stdout.readline().strip() == "listening"
            # Plain datagrams first, while the ping flow runs: all five must arrive in order.
            # Under the saturating transfers below UDP may lose a datagram to a full queue
            # (the kernel's, not ours), which says nothing about the tunnel.
            pings = a.popen(
                "ping", "-c", "10", "-i", "0.1", "-W", "2", B6, stdout=subprocess.PIPE, text=True
            )
            a.run(sys.executable, UDPCHECK, "send", B4, "7000", *[f"plain-{i}" for i in range(5)])
            sender = a.popen(
                sys.executable,
                TCPCHECK,
                "send",
                B4,
                "5401",
                str(TRANSFER),
                stdout=subprocess.PIPE,
                text=True,
            )
            a.run(sys.executable, "-c", USO_SENDER, B4, "7000")
            tcp_transfer(a, b, A4, SMALL_TRANSFER, 5402)  # the other way, meanwhile
            out, _ = sender.communicate(timeout=60)
            local, remote = out.split()
            assert local == remote
            assert pings.wait(30) == 0
            got, _ = listener.communicate(timeout=30)
        finally:
            for proc in (listener, server):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        lines = got.split()
        assert [f"plain-{i}" for i in range(5)] == [x for x in lines if x.startswith("plain")]
        uso = [x for x in lines if x.startswith("uso")]
        bursts = [
            [f"uso{k}-{i:02d}".ljust(USO_SIZE, ".") for i in range(USO_SEGMENTS)]
            for k in range(USO_BURSTS)
        ]
        assert set(uso) <= {d for burst in bursts for d in burst}, uso  # none cut or damaged
        assert any(burst == [x for x in uso if x in burst] for burst in bursts), uso
        assert daemon.terminate() == 0
    stats = final_stats(daemon.log())
    assert counter(stats, "bad_gso") == 0, stats
    if "tun_uso=on" in stats:  # kernels before 6.2 have no USO on TUN: then plain datagrams
        assert counter(stats, "gso_packets") >= USO_SEGMENTS, stats


@pytest.mark.parametrize(
    "refused", ["tun_vnet_hdr", "tun_tso", "tun_uso", "tun_gro", "udp_gso", "udp_gro"]
)
def test_refused_offload_falls_back(netns_pair, tmp_path: Path, refused: str) -> None:
    env = {REFUSE_ENV: refused}
    wggo, daemon = start_pair(netns_pair, tmp_path, "wgo2", env=env)
    with wggo, daemon:
        assert reachable(netns_pair.a, B4, count=1) and reachable(netns_pair.a, B6, count=1), (
            daemon.log()
        )
        both_ways(netns_pair, ("v4",), SMALL_TRANSFER)
        status = netns_pair.a.run(str(LAUNCHER), "status", "wgo2", timeout=30).stdout
        assert daemon.terminate() == 0
    log = daemon.log()
    names = ["tun_tso", "tun_uso", "tun_gro"] if refused == "tun_vnet_hdr" else [refused]
    for name in names:
        assert f"{name}=refused" in status, status
        assert f"offload {name} not available" in log, log[-3000:]
        assert f"{name}=refused" in final_stats(log)
    if refused in ("tun_vnet_hdr", "tun_tso"):
        assert counter(final_stats(log), "gso_frames") == 0
    if refused in ("tun_vnet_hdr", "tun_gro"):
        assert counter(final_stats(log), "gro_frames") == 0
