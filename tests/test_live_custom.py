"""Users' stages in a live tunnel against wireguard-go, one on each path, with options."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from netns import Netns, require_tools
from wgactors_proc import A4, B4, ROOT, Wgactors, wireguard_go_pair

pytestmark = pytest.mark.netns

UDPCHECK = str(ROOT / "tests" / "udpcheck.py")
MODES = [pytest.param((), id="actors"), pytest.param(("--single-threaded",), id="single")]


def udp_through(
    listen_ns: Netns, send_ns: Netns, addr: str, port: int, texts: list[str]
) -> list[str]:
    """Payloads that made it to ``addr:port`` across the tunnel."""
    listener = listen_ns.popen(
        sys.executable, UDPCHECK, "listen", port, "2", stdout=subprocess.PIPE, text=True
    )
    assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
    send_ns.run(sys.executable, UDPCHECK, "send", addr, port, *texts)
    out, _ = listener.communicate(timeout=10)
    return out.split()


def run_tunnel(netns_pair, tmp_path: Path, pipeline: str, mode: tuple, pythonpath: str):
    wggo, conf = wireguard_go_pair(netns_pair, tmp_path, "wgc0", peer={"PersistentKeepalive": 25})
    pipe = tmp_path / "pipeline.toml"
    pipe.write_text(pipeline)
    daemon = Wgactors(
        netns_pair.a, conf, "--pipeline", str(pipe), *mode, env={"PYTHONPATH": pythonpath}
    )
    return wggo, daemon


@pytest.mark.parametrize("mode", MODES)
def test_custom_stage_on_each_path(netns_pair, tmp_path: Path, mode: tuple) -> None:
    pipeline = """
[[inbound]]
use = "custom_stages:DropUdpPort"
name = "inbound_filter"
options = { port = 9999 }

[[outbound]]
use = "custom_stages:DropUdpPort"
name = "outbound_filter"
options = { port = 7777 }
"""
    wggo, daemon = run_tunnel(netns_pair, tmp_path, pipeline, mode, str(ROOT / "tests"))
    try:
        with daemon:
            ping = netns_pair.a.run("ping", "-c", "2", "-i", "0.2", "-W", "2", B4, check=False)
            assert ping.returncode == 0, daemon.log()
            # inbound: from the peer into our host
            assert udp_through(netns_pair.a, netns_pair.b, A4, 9999, ["no"]) == []
            assert udp_through(netns_pair.a, netns_pair.b, A4, 9998, ["yes1", "yes2"]) == [
                "yes1",
                "yes2",
            ]
            # outbound: from our host to the peer
            assert udp_through(netns_pair.b, netns_pair.a, B4, 7777, ["no"]) == []
            assert udp_through(netns_pair.b, netns_pair.a, B4, 7776, ["out"]) == ["out"]
            assert daemon.terminate() == 0
            final = daemon.log().split("final stats:")[-1]
            for name in ("inbound_filter", "outbound_filter"):
                counted = re.search(rf"'name': '{name}'.*?'udp_dropped': (\d+)", final)
                assert counted and int(counted.group(1)) == 1, final
    finally:
        wggo.stop()


def readme_example() -> tuple[str, str]:
    """The code block of the README's "Write your own actor" section, and its class name."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Write your own actor", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    name = re.search(r"^class (\w+)\(Stage\)", code, re.M)
    assert name, "the README example defines no Stage"
    return code, name.group(1)


def test_readme_example_is_short_and_complete() -> None:
    code, _ = readme_example()
    lines = [ln for ln in code.strip().splitlines() if ln.strip()]
    assert 10 <= len(lines) <= 25
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # it must run as it stands


def test_readme_example_runs_in_a_live_tunnel(netns_pair, tmp_path: Path) -> None:
    code, cls = readme_example()
    (tmp_path / "readme_example.py").write_text(code)
    pipeline = (
        '[[inbound]]\nuse = "readme_example:' + cls + '"\n' + "options = { ports = [9999] }\n"
    )
    wggo, daemon = run_tunnel(netns_pair, tmp_path, pipeline, (), str(tmp_path))
    try:
        with daemon:
            ping = netns_pair.a.run("ping", "-c", "2", "-i", "0.2", "-W", "2", B4, check=False)
            assert ping.returncode == 0, daemon.log()
            assert udp_through(netns_pair.a, netns_pair.b, A4, 9999, ["blocked"]) == []
            assert udp_through(netns_pair.a, netns_pair.b, A4, 9998, ["ok"]) == ["ok"]
            assert daemon.terminate() == 0
    finally:
        wggo.stop()


def test_contrib_stages_in_a_live_tunnel(netns_pair, tmp_path: Path) -> None:
    require_tools("tshark")
    capture = tmp_path / "inbound.pcap"
    pipeline = f"""
[[inbound]]
use = "actors.contrib.firewall:Firewall"
options = {{ default = "allow", rules = [
    {{ name = "no-9999", action = "deny", proto = "udp", dport = 9999 }},
] }}

[[inbound]]
use = "actors.contrib.pcap:PcapWriter"
options = {{ path = "{capture}" }}

[[outbound]]
use = "actors.contrib.flowstats:FlowStats"
options = {{ top = 3 }}
"""
    wggo, daemon = run_tunnel(netns_pair, tmp_path, pipeline, (), str(ROOT / "tests"))
    try:
        with daemon:
            ping = netns_pair.a.run("ping", "-c", "3", "-i", "0.2", "-W", "2", B4, check=False)
            assert ping.returncode == 0, daemon.log()
            assert udp_through(netns_pair.a, netns_pair.b, A4, 9999, ["blocked"]) == []
            assert daemon.terminate() == 0
        final = daemon.log().split("final stats:")[-1]
        assert re.search(r"'rule': 'no-9999', 'action': 'deny', 'matches': 1", final), final
        assert re.search(r"'top_talkers': \[\{'flow': '10\.99\.0\.1 -> 10\.99\.0\.2 icmp'", final)
        fields = subprocess.run(
            ["tshark", "-r", str(capture), "-T", "fields", "-e", "ip.src", "-e", "icmp.type"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split("\n")
        replies = [f for f in fields if f.strip() == f"{B4}\t0"]
        assert len(replies) == 3, fields  # the three echo replies, captured on the way in
    finally:
        wggo.stop()
