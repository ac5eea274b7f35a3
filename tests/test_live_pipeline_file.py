"""The pipeline file in a live tunnel against wireguard-go, in both modes (issue 23).

A daemon started from ``/`` (as systemd starts it) with relative option paths, a stage file
that imports a module beside the pipeline file, and a hosts-file DnsFilter answering NXDOMAIN.
Then two SIGHUPs: one changes only the inbound entry, and the outbound stages keep their
instances and counters; one follows an edit of the stage file (a new option, a new helper),
and the new code runs.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from test_live_abilities import probe, started
from test_live_trusted import status, wait_for_log
from wgactors_proc import B4, Wgactors, wireguard_go_pair

pytestmark = pytest.mark.netns

MODES = [pytest.param((), id="actors"), pytest.param(("--single-threaded",), id="single")]
SERVE_SECONDS = 60
PCAP_HEADER = 24
QUERIES = 3  # blocked queries per phase
STAGE = """
from actors import Packet, Stage
from helper import VERSION


class Versioned(Stage):
    \"\"\"Passes everything; says which version of its code runs.\"\"\"

    def __init__(self{extra}) -> None:
        super().__init__()

    def process(self, packet: Packet) -> Packet:
        return packet

    def stats_extra(self) -> dict[str, str]:
        return {{"version": VERSION}}
"""


def write_stage(folder: Path, extra: str, version: str) -> None:
    (folder / "stages" / "versioned.py").write_text(STAGE.format(extra=extra))
    (folder / "helper.py").write_text(f'VERSION = "{version}"\n')


def pipeline(snaplen: int, versioned_options: str = "{}") -> str:
    return f"""
[[inbound]]
use = "pcap"
options = {{ path = "captures/in.pcap", snaplen = {snaplen} }}

[[outbound]]
use = "dnsfilter"
options = {{ hosts_file = "lists/hosts" }}

[[outbound]]
use = "stages/versioned.py:Versioned"
options = {versioned_options}
"""


@pytest.mark.parametrize("mode", MODES)
def test_pipeline_file_from_slash_reloads_and_edits(
    netns_pair, tmp_path: Path, mode: tuple
) -> None:
    a, b = netns_pair.a, netns_pair.b
    for folder in ("stages", "lists", "captures"):
        (tmp_path / folder).mkdir()
    (tmp_path / "lists" / "hosts").write_text("# ads\n0.0.0.0 blocked.example other.example\n")
    write_stage(tmp_path, "", "1")
    pipe = tmp_path / "pipeline.toml"
    pipe.write_text(pipeline(1000))
    wggo, conf = wireguard_go_pair(netns_pair, tmp_path, "wgpf0", peer={"PersistentKeepalive": 25})
    try:
        with Wgactors(a, conf, "--pipeline", str(pipe), *mode, cwd=Path("/")) as daemon:
            assert a.run("ping", "-c", "1", "-W", "2", B4, check=False).returncode == 0, (
                daemon.log()[-3000:]
            )
            server = started(b, "dns-serve", B4, SERVE_SECONDS)
            first = [probe(a, "dns-query", B4, "www.blocked.example") for _ in range(QUERIES)]
            assert probe(a, "dns-query", B4, "allowed.example").startswith("rcode=0 ")
            stages = status(a, "wgpf0")
            assert stages["versioned_out"]["version"] == "1"
            seen = stages["dnsfilter_out"]["packets_in"]
            assert seen >= QUERIES + 2  # the ping and the four queries

            # 1. only the inbound entry changes: the outbound stages keep instance and counts
            pipe.write_text(pipeline(500))
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for_log(daemon, "reloaded in", 1)
            second = [probe(a, "dns-query", B4, "other.example") for _ in range(QUERIES)]
            stages = status(a, "wgpf0")
            assert stages["dnsfilter_out"]["packets_in"] >= seen + QUERIES, stages
            assert stages["dnsfilter_out"]["dns_blocked"] == 2 * QUERIES, stages
            assert stages["pcapwriter"]["pcap_path"] == str(tmp_path / "captures" / "in.pcap")

            # 2. the stage file is edited (a new option, a new helper): SIGHUP loads it
            write_stage(tmp_path, ", verbose: bool = False", "2")
            pipe.write_text(pipeline(500, "{ verbose = true }"))
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for_log(daemon, "reloaded in", 2)
            stages = status(a, "wgpf0")
            assert stages["versioned_out"]["version"] == "2", stages
            assert stages["dnsfilter_out"]["dns_blocked"] == 2 * QUERIES, stages
            # the capture (its path relative to the pipeline file) takes the replies
            assert a.run("ping", "-c", "1", "-W", "2", B4, check=False).returncode == 0
            b.stop(server)
            assert server.stdout is not None
            asked = server.stdout.read()
            assert daemon.terminate() == 0
        log = daemon.log()
    finally:
        wggo.stop()
    for answer in first + second:
        assert answer.startswith("rcode=3 "), (first, second, log[-3000:])
    assert asked.split() == ["allowed.example"]  # nothing blocked reached the peer
    reloads = [line for line in log.splitlines() if "reloaded in" in line]
    assert "inbound ~pcapwriter (now pcapwriter)" in reloads[0], reloads
    assert "outbound" not in reloads[0], reloads
    assert "outbound ~versioned_out" in reloads[1] and "~dnsfilter_out" not in reloads[1], reloads
    assert (tmp_path / "captures" / "in.pcap").stat().st_size > PCAP_HEADER
    assert not Path("/captures").exists()
