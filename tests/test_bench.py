"""`scripts/bench --quick` end to end: it works, reports figures, and leaves nothing behind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from netns import require_tools
from scriptrun import cmdlines, namespaces, run_script

TIMEOUT = 180.0
CASES = ("veth", "reference", "wgactors", "wgactors-single")
TUNNEL_CASES = ("reference", "wgactors", "wgactors-single")
WGACTORS_CASES = ("wgactors", "wgactors-single")

pytestmark = pytest.mark.netns


def test_bench_quick(tmp_path: Path) -> None:
    require_tools("wireguard-go", "wg", "iperf3", "ping", "ss")
    json_path = tmp_path / "bench.json"

    returncode, output = run_script("bench", "--quick", "--json", str(json_path), timeout=TIMEOUT)

    assert returncode == 0, f"scripts/bench --quick exited {returncode}:\n{output}"
    assert "median" in output.lower(), output
    assert re.search(r"^machine: nproc \d+", output, re.M), output
    # All four targets are checked; a MISS is a finding, not a failure of the bench.
    assert len(re.findall(r"^\s+(?:PASS|MISS)\s", output, re.M)) == 4, output

    report = json.loads(json_path.read_text())
    assert report["ok"] is True, output
    assert report["statistic"] == "median"
    assert report["settings"]["rounds"] == 1 and report["settings"]["seconds"] == 1
    assert set(report["cases"]) == set(CASES), sorted(report["cases"])
    for key in CASES:
        case = report["cases"][key]
        assert len(case["rounds"]) == 1, (key, case)
        assert not case["rounds"][0]["errors"], (key, case["rounds"][0]["errors"])
        for metric in ("tcp_up_mbps", "tcp_down_mbps", "tcp_sum_mbps", "udp_pps"):
            assert case["median"][metric] > 0, (key, metric, case["median"])
            assert case["rounds"][0][metric] > 0, (key, metric)
        assert case["median"]["ping_idle_ms"] > 0, (key, case["median"])
        assert case["rounds"][0]["link_packets"] > 0, (key, "no packets counted on a's link")
    for key in TUNNEL_CASES:
        case = report["cases"][key]
        assert case["rounds"][0]["b_rx_bytes"] > 0, (key, "nothing went through the tunnel")
        # Context switches of the a end per 1000 packets through its interface: every
        # implementation switches at least once per batch of packets, and far less than
        # once per packet per thread in a pipeline of a handful of threads.
        assert 0 < case["median"]["ctx_per_kpkt"] < 100_000, (key, case["median"])
    assert "ctx_per_kpkt" not in report["cases"]["veth"]["median"]  # no process to count
    # Counted per thread: the actor pipeline's stage threads are named wga:STAGE.
    threads = report["cases"]["wgactors"]["rounds"][0]["context_switches_by_thread"]
    assert any(name.startswith("wga:") for name in threads), threads
    assert report["ratios"]["reference"]["updown_share_of_veth"] > 0, report["ratios"]
    for key in WGACTORS_CASES:
        case = report["cases"][key]
        assert 0 < case["median"]["rss_mb"] < 4096, (key, case["median"])
        assert case["median"]["cpu_pct"] > 0, (key, case["median"])
        assert case["rounds"][0]["exit_status"] == 0, (key, case["rounds"][0])
    assert {t["status"] for t in report["targets"]} <= {"PASS", "MISS"}, report["targets"]

    # Nothing it started is left behind: its namespaces (wgb-TAG-a/b), temp dir, processes
    # (interfaces wgbTAG<n>a/b), wireguard-go sockets. Only this run's tag counts: other test
    # sessions may run tunnels at the same time.
    m = re.search(r"namespaces (wgb-([0-9a-f]+)-a) and (wgb-\2-b), temp dir (\S+)", output)
    assert m, f"the bench did not say which namespaces it used:\n{output}"
    tag, tmpdir = m.group(2), Path(m.group(4))
    assert report["namespaces"] == [m.group(1), m.group(3)]
    leftover_ns = sorted(n for n in namespaces() if n.startswith(f"wgb-{tag}-"))
    assert not leftover_ns, f"namespaces left behind: {leftover_ns}"
    assert not tmpdir.exists(), f"temp dir {tmpdir} left behind"
    leftover = {
        pid: cmd for pid, cmd in cmdlines().items() if f"wgb{tag}" in cmd or f"wgb-{tag}-" in cmd
    }
    assert not leftover, f"processes left behind: {leftover}"
    assert not list(Path("/var/run/wireguard").glob(f"wgb{tag}*.sock"))
