"""PeerRateLimit live, in both modes, against two wireguard-go peers (issue 23): a 50 Mbit/s
UDP stream from one peer through a 10 Mbit/s bucket arrives at 10 +- 2 Mbit/s, while a 5 Mbit/s
stream from the other peer, at the same time, arrives whole. An outbound stage that declares a
tick interval is ticked meanwhile (the ticker in the pipeline, the loop in single mode)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from netns import WgPeer, WireguardGo, gen_keypair
from wgactors_proc import ROOT, Wgactors, write_conf

from actors.lab import reachable
from actors.lab.netns import Netns
from actors.lab.traffic import IperfServer

pytestmark = pytest.mark.netns

MODES = [pytest.param((), id="actors"), pytest.param(("--single-threaded",), id="single")]
SECONDS = 6  # each stream's length (-t)
SLACK = 30  # seconds a client may run past its -t before it counts as hung
PAYLOAD = 1200  # UDP payload bytes: 1228-byte packets, inside the tunnel's 1280
LIMITED_MBIT, FLOOD_MBIT, OTHER_MBIT = 10, 50, 5
TOLERANCE_MBIT = 2.0
MIN_TICKS = 10
OTHER_MIN_MBIT = 4.5  # the other peer's 5 Mbit/s arrive (a few packets may be lost to load)
US1, US2, GO1, GO2 = "10.99.1.1", "10.99.2.1", "10.99.1.2", "10.99.2.2"


def start_client(ns: Netns, server: str, port: int, mbit: int, out: Path) -> subprocess.Popen[Any]:
    argv = ["iperf3", "-c", server, "-p", port, "-u", "-b", f"{mbit}M", "-l", PAYLOAD]
    with open(out, "wb") as fh:
        return ns.popen(*argv, "-t", SECONDS, "-J", stdout=fh, stderr=subprocess.STDOUT)


def received_mbit(report_path: Path) -> float:
    """Payload bits per second the server received (what got through), in Mbit/s."""
    report = json.loads(report_path.read_text())
    assert not report.get("error"), report.get("error")
    end = report["end"]
    received = end.get("sum_received") or end["sum"]
    got = int(received["packets"]) - int(received["lost_packets"])
    return got * PAYLOAD * 8 / float(received["seconds"]) / 1e6


@pytest.mark.parametrize("mode", MODES)
def test_a_flood_from_one_peer_is_held_to_its_rate_and_the_other_is_unaffected(
    netns_pair, tmp_path: Path, mode: tuple
) -> None:
    a, b = netns_pair.a, netns_pair.b
    ours, our_pub = gen_keypair()
    k1, _ = gen_keypair()
    k2, _ = gen_keypair()
    pipeline = tmp_path / "pipeline.toml"
    pipeline.write_text(
        f'[[inbound]]\nuse = "ratelimit"\noptions = {{ rate = "{LIMITED_MBIT}mbit", '
        'burst = "64kb" }\n'
        f'[[outbound]]\nuse = "{ROOT / "tests" / "ability_stages.py"}:CountTicks"\n'
    )
    with (
        WireguardGo(
            b,
            k1,
            listen_port=51820,
            addresses=[f"{GO1}/24"],
            peers=[WgPeer(our_pub, [f"{US1}/32"])],
        ) as go1,
        WireguardGo(
            b,
            k2,
            listen_port=51830,
            addresses=[f"{GO2}/24"],
            peers=[WgPeer(our_pub, [f"{US2}/32"])],
        ) as go2,
    ):
        conf = write_conf(
            tmp_path,
            "wgrl0",
            {"PrivateKey": ours, "ListenPort": 51821, "Address": f"{US1}/24, {US2}/24"},
            [
                {
                    "PublicKey": go1.public_key,
                    "AllowedIPs": f"{GO1}/32",
                    "Endpoint": f"{netns_pair.addr_b4}:51820",
                },
                {
                    "PublicKey": go2.public_key,
                    "AllowedIPs": f"{GO2}/32",
                    "Endpoint": f"{netns_pair.addr_b4}:51830",
                },
            ],
        )
        with Wgactors(a, conf, "--pipeline", str(pipeline), *mode) as daemon:
            assert reachable(a, GO1, count=1, source=US1), daemon.log()
            assert reachable(a, GO2, count=1, source=US2), daemon.log()
            flood_out, other_out = tmp_path / "flood.json", tmp_path / "other.json"
            with (
                IperfServer(a, US1, tmp_path / "s1.log", port=5201),
                IperfServer(a, US2, tmp_path / "s2.log", port=5202),
            ):
                flood = start_client(b, US1, 5201, FLOOD_MBIT, flood_out)
                other = start_client(b, US2, 5202, OTHER_MBIT, other_out)
                try:
                    assert flood.wait(SECONDS + SLACK) == 0, flood_out.read_text()[-2000:]
                    assert other.wait(SECONDS + SLACK) == 0, other_out.read_text()[-2000:]
                finally:
                    b.stop(flood)
                    b.stop(other)
            assert daemon.terminate() == 0
        log = daemon.log()
    limited, unaffected = received_mbit(flood_out), received_mbit(other_out)
    print(f"{mode or 'actors'}: flood -> {limited:.2f} Mbit/s, other -> {unaffected:.2f} Mbit/s")
    assert abs(limited - LIMITED_MBIT) <= TOLERANCE_MBIT, (limited, log[-3000:])
    assert unaffected >= OTHER_MIN_MBIT, (unaffected, log[-3000:])
    final = log.split("final stats:")[-1]
    entry = re.search(r"'name': 'peerratelimit'.*?'rate_bytes': (\d+)", final)
    assert entry and int(entry.group(1)) > 0, final
    # ticked every 0.1 s for the whole run (6 s of streams at least): far more than 10 ticks
    ticks = re.search(r"'name': 'countticks_out'.*?'ticks': (\d+)", final)
    assert ticks and int(ticks.group(1)) >= MIN_TICKS, final
