"""Stage abilities in a live tunnel against wireguard-go, in both modes (issue 15): a DNS
filter answering NXDOMAIN to the host, a firewall rejecting on both paths, and a user's stage
answering pings from the peer by itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from netns import Netns
from wgactors_proc import A4, B4, ROOT, Wgactors, wireguard_go_pair

pytestmark = pytest.mark.netns

CHECK = str(ROOT / "tests" / "abilitycheck.py")
STAGES = ROOT / "tests" / "ability_stages.py"
MODES = [pytest.param((), id="actors"), pytest.param(("--single-threaded",), id="single")]
SERVE_SECONDS = 20
NXDOMAIN_WITHIN_MS = 10.0
REJECT_WITHIN_MS = 500.0  # "at once": far below any retransmission timeout (1 s and more)


def pipeline(peer_key: str) -> str:
    rules = """rules = [
    { action = "reject", proto = "tcp", dport = 7001 },
    { action = "reject", proto = "udp", dport = 7002 },
] }"""
    return f"""
[[inbound]]
use = "{STAGES}:AnswerPings"
options = {{ address = "{A4}", peer = "{peer_key}" }}

[[inbound]]
use = "firewall"
name = "fw_in"
options = {{ {rules}

[[outbound]]
use = "dnsfilter"
options = {{ block = ["blocked.example"] }}

[[outbound]]
use = "firewall"
name = "fw_out"
options = {{ {rules}
"""


def probe(ns: Netns, *args: object) -> str:
    return ns.run(sys.executable, CHECK, *args).stdout.strip()


def started(ns: Netns, *args: object) -> subprocess.Popen[str]:
    proc = ns.popen(sys.executable, CHECK, *args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def refused_ms(line: str) -> float:
    match = re.fullmatch(r"refused ms=([\d.]+)", line)
    assert match, line
    return float(match.group(1))


@pytest.mark.parametrize("mode", MODES)
def test_stage_abilities_against_wireguard_go(netns_pair, tmp_path: Path, mode: tuple) -> None:
    a, b = netns_pair.a, netns_pair.b
    wggo, conf = wireguard_go_pair(netns_pair, tmp_path, "wgab0", peer={"PersistentKeepalive": 25})
    pipe = tmp_path / "pipeline.toml"
    pipe.write_text(pipeline(wggo.public_key))
    try:
        with Wgactors(a, conf, "--pipeline", str(pipe), *mode) as daemon:
            ping = a.run("ping", "-c", "1", "-W", "2", B4, check=False)
            assert ping.returncode == 0, daemon.log()

            # An inbound stage answers pings from the peer itself (peer identity, way back).
            ping = b.run("ping", "-c", "3", "-i", "0.2", "-W", "2", A4, check=False)
            assert ping.returncode == 0, ping.stdout + daemon.log()

            # DnsFilter: blocked names never leave; others reach the peer's DNS server.
            server = started(b, "dns-serve", B4, SERVE_SECONDS)
            blocked = [probe(a, "dns-query", B4, "www.blocked.example") for _ in range(3)]
            allowed = probe(a, "dns-query", B4, "allowed.example")

            # Firewall reject, both paths, with listeners behind it that would accept.
            listen_b = started(b, "listen", B4, 7001, SERVE_SECONDS)
            listen_b2 = started(b, "listen", B4, 7002, SERVE_SECONDS)
            listen_a = started(a, "listen", A4, 7001, SERVE_SECONDS)
            listen_a2 = started(a, "listen", A4, 7002, SERVE_SECONDS)
            outbound = [probe(a, "tcp", B4, 7001), probe(a, "udp", B4, 7002)]
            inbound = [probe(b, "tcp", A4, 7001), probe(b, "udp", A4, 7002)]
            # the listeners do accept: only the stages refused
            controls = [probe(b, "tcp", B4, 7001), probe(a, "udp", A4, 7002)]
            for proc in (listen_a, listen_a2):
                a.stop(proc)
            for proc in (server, listen_b, listen_b2):
                b.stop(proc)
            assert server.stdout is not None
            asked = server.stdout.read()
            assert daemon.terminate() == 0
        log = daemon.log()
    finally:
        wggo.stop()

    print(f"{mode or 'actors'}: blocked {blocked}, allowed {allowed}, reject {outbound + inbound}")
    for line in blocked:
        assert line.startswith("rcode=3 "), (blocked, log[-3000:])
    assert min(float(line.split("ms=")[1]) for line in blocked) < NXDOMAIN_WITHIN_MS, blocked
    assert allowed.startswith("rcode=0 "), (allowed, log[-3000:])
    assert asked.split() == ["allowed.example"]  # nothing for the blocked name reached the peer

    for line in outbound + inbound:
        assert refused_ms(line) < REJECT_WITHIN_MS, (outbound, inbound)
    assert controls == ["connected", "answered"], controls

    final = log.split("final stats:")[-1]
    assert re.search(r"'pings_answered': 3\b", final), final
    assert re.search(r"'pings_from_strangers': 0\b", final), final
    assert re.search(r"'pings_routed_back': 3\b", final), final  # Stage.peer_for, live
    assert re.search(r"'dns_blocked': 3, 'dns_malformed': 0, 'dns_seen': 4\b", final), final
    # answered packets are consumed, not dropped (issue 23 item 1)
    for name, answered in (("answerpings", 3), ("dnsfilter_out", 3)):
        entry = re.search(rf"'name': '{name}'.*?'drops': (\{{[^}}]*\}}).*?'consumed': (\d+)", final)
        assert entry and entry.group(1) == "{}" and int(entry.group(2)) == answered, final
    for name in ("fw_in", "fw_out"):
        entry = re.search(rf"'name': '{name}'.*?'firewall_rejected': (\d+)", final)
        assert entry and int(entry.group(1)) == 2, final
