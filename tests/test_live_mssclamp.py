"""MssClamp live: both ends believe in an MTU of 1420 (wg-quick's), and the SYNs that cross the
tunnel carry an MSS that fits its 1280, checksums right, as tshark sees them on each side."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns import Netns, require_tools
from wgactors_proc import B4, ROOT, Wgactors, wireguard_go_pair

pytestmark = pytest.mark.netns

TCPCHECK = str(ROOT / "tests" / "tcpcheck.py")
MODES = [pytest.param((), id="actors"), pytest.param(("--single-threaded",), id="single")]
HOST_MTU = 1420  # what both hosts believe: their SYNs announce 1420 - 40
TRANSFER = 4 * 1024 * 1024  # bytes of the checksummed transfer after the handshake
CAPTURE_WAIT = 60.0  # seconds tshark may take to start (its first start builds tables) or end
PIPELINE = '[[outbound]]\nuse = "mssclamp"\n\n[[inbound]]\nuse = "mssclamp"\n'


class SynCapture:
    """tshark on one interface, for the two SYN-flagged segments of one connection."""

    def __init__(self, ns: Netns, iface: str, path: Path) -> None:
        self.path = path
        self.proc = ns.popen(
            "tshark", "-i", iface, "-f", "tcp[tcpflags] & tcp-syn != 0 and port 5201",
            "-c", "2", "-w", str(path), stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + CAPTURE_WAIT
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # "Capturing on 'wg..'" once it listens
            if "Capturing on" in line or time.monotonic() > deadline:
                break
        assert self.proc.poll() is None, "tshark did not start"

    def rows(self) -> list[tuple[int, int, str]]:
        """(flags, MSS, checksum status) of each captured segment."""
        assert self.proc.wait(CAPTURE_WAIT) == 0
        out = subprocess.run(
            ["tshark", "-r", str(self.path), "-o", "tcp.check_checksum:TRUE", "-T", "fields",
             "-e", "tcp.flags", "-e", "tcp.options.mss_val", "-e", "tcp.checksum.status"],
            capture_output=True, text=True, timeout=CAPTURE_WAIT, check=True,
        ).stdout  # fmt: skip
        rows = []
        for line in out.splitlines():
            flags, mss, status = line.split("\t")
            rows.append((int(flags, 16), int(mss), status))
        return rows

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.mark.parametrize("mode", MODES)
def test_syns_cross_the_tunnel_with_an_mss_that_fits_it(
    netns_pair, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    require_tools("tshark")
    wggo, conf = wireguard_go_pair(netns_pair, tmp_path, "wgm0")
    pipe = tmp_path / "pipeline.toml"
    pipe.write_text(PIPELINE)
    captures: list[SynCapture] = []
    try:
        with Wgactors(netns_pair.a, conf, "--pipeline", str(pipe), *mode) as daemon:
            netns_pair.a.ip("link", "set", "wgm0", "mtu", HOST_MTU)
            netns_pair.b.ip("link", "set", wggo.iface, "mtu", HOST_MTU)
            ours = SynCapture(netns_pair.a, "wgm0", tmp_path / "a.pcap")
            theirs = SynCapture(netns_pair.b, wggo.iface, tmp_path / "b.pcap")
            captures += [ours, theirs]
            server = netns_pair.b.popen(
                sys.executable, TCPCHECK, "serve", "5201", stdout=subprocess.PIPE, text=True
            )
            assert server.stdout is not None and server.stdout.readline().strip() == "listening"
            result = netns_pair.a.run(
                sys.executable, TCPCHECK, "send", B4, 5201, TRANSFER, timeout=120
            )
            assert server.wait(30) == 0
            local, remote = result.stdout.split()
            assert local == remote, daemon.log()[-3000:]
            syn, syn_ack, good = 0x002, 0x012, "1"  # tcp.checksum.status: 1 is "Good"
            # peer side: our SYN arrives clamped; its own SYN-ACK leaves as its host made it
            assert theirs.rows() == [(syn, 1240, good), (syn_ack, HOST_MTU - 40, good)]
            # our side: our host's SYN as made; the peer's SYN-ACK delivered clamped
            assert ours.rows() == [(syn, HOST_MTU - 40, good), (syn_ack, 1240, good)]
    finally:
        for capture in captures:
            capture.stop()
        wggo.stop()
