"""Packets above 1280 bytes from the host, through a real TUN device at MTU 1420 in a
namespace, read by ``TunDevice.read_batch`` (the one read path of both modes), with and without
the virtio-net header: fragments that reassemble to what the sockets sent, and ICMP replies
that the host's kernel takes (its path MTU drops to 1280)."""

from __future__ import annotations

import json
import re
import struct
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import NetnsPair
from ippkt import reassemble
from netns import Netns, WireguardGo, gen_keypair, require_tools
from test_live_daemon import transfer
from test_live_dropin import daemon_pids, wait_until
from wgactors_proc import A4, B4, LAUNCHER, write_conf

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
    assert found["counts"]["oversize_fragmented"] == 5
    assert found["counts"]["oversize_fragments"] == 10
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


A6, B6 = "fd99::1", "fd99::2"
# the drop-in mode's modes and offloads, as wg-quick starts it (the environment selects them)
DROPIN_MODES = [
    pytest.param({}, id="actors"),
    pytest.param({"WGACTORS_SINGLE_THREADED": "1"}, id="single"),
    pytest.param(
        {"WGACTORS_OFFLOADS": "tun_tso,tun_uso,tun_gro,udp_gso"}, id="actors-tun-offloads"
    ),
]


@pytest.mark.parametrize("env", DROPIN_MODES)
def test_wg_quick_up_at_mtu_1420_carries_big_packets(
    netns_pair: NetnsPair, tmp_path: Path, env: dict[str, str]
) -> None:
    """`wg-quick up` against wireguard-go, both at wg-quick's MTU 1420, as the issue found it:
    1392-byte pings without DF arrive 3 of 3, with DF the host is told the path MTU (IPv4 and
    IPv6), and checksummed TCP transfers work both ways."""
    require_tools("wg-quick", "wireguard-go", "ping")
    key, _ = gen_keypair()
    with WireguardGo(
        netns_pair.b, key, listen_port=51820, addresses=[f"{B4}/24", f"{B6}/64"], mtu=1420
    ) as wggo:
        ours, our_pub = gen_keypair()
        wggo.set_peer(our_pub, allowed_ips=[f"{A4}/32", f"{A6}/128"])
        conf = write_conf(
            tmp_path,
            "wgm0",
            {"PrivateKey": ours, "ListenPort": 51821, "Address": f"{A4}/24, {A6}/64"},
            [
                {
                    "PublicKey": wggo.public_key,
                    "AllowedIPs": f"{B4}/32, {B6}/128",
                    "Endpoint": f"{netns_pair.addr_b4}:51820",
                }
            ],
        )
        log = tmp_path / "wgactors.log"
        env = {
            "WG_QUICK_USERSPACE_IMPLEMENTATION": str(LAUNCHER),
            "WGACTORS_LOG_FILE": str(log),
            **env,
        }
        a = netns_pair.a
        up = a.run("wg-quick", "up", str(conf), env_extra=env, timeout=60, check=False)
        assert up.returncode == 0, up.stderr
        try:
            assert " mtu 1420 " in a.ip("-o", "link", "show", "dev", "wgm0").stdout
            ping = ("ping", "-c", "3", "-i", "0.2", "-W", "5", "-s", "1392")
            once = ("ping", "-c", "1", "-W", "5", "-s", "1392")
            dont = a.run(*ping, "-M", "dont", B4, check=False, timeout=30)
            assert " 3 received" in dont.stdout, dont.stdout + log.read_text()
            do = a.run(*once, "-M", "do", B4, check=False, timeout=30)
            assert re.search(r"mtu ?= ?1280", do.stdout + do.stderr), do
            # 1360 + 8 + 40 = 1408 bytes: within the interface's 1420
            once6, ping6 = (*once[:-1], "1360"), (*ping[:-1], "1360")
            do6 = a.run(*once6, "-M", "do", B6, check=False, timeout=30)
            assert re.search(r"mtu ?= ?1280", do6.stdout + do6.stderr), do6
            # the host now fragments IPv6 to 1280 itself. The first echo reply, 1408 bytes from
            # wireguard-go's side, is refused on the way in (IPv6 is not fragmented en route)
            # and teaches that host the path MTU in turn; from then on the size goes through.
            a.run(*once6, B6, check=False, timeout=30)
            v6 = a.run(*ping6, B6, check=False, timeout=30)
            assert " 3 received" in v6.stdout, v6.stdout
            # what happened is counted where `wgactors status` shows it, in either mode
            status = a.run(str(LAUNCHER), "status", "wgm0", "--json").stdout
            stages = json.loads(status)["stages"]["stages"]
            assert sum(s.get("oversize_fragmented", 0) for s in stages) == 3, stages
            assert sum(s.get("oversize_fragments", 0) for s in stages) == 6, stages
            transfer(netns_pair.b, a, B4)
            transfer(a, netns_pair.b, A4)
            text = log.read_text()
            assert "MTU 1280 on the interface; if raised (wg-quick up sets 1420)" in text
            assert "wgm0: MTU 1420 on the interface: packets above 1280 are fragmented" in text
        finally:
            down = a.run("wg-quick", "down", str(conf), env_extra=env, check=False)
        assert down.returncode == 0, down.stderr
        assert wait_until(lambda: not daemon_pids("wgm0"))
