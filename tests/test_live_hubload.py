"""The hub load generator against today's daemon: two live peers played from namespace b,
a short bounded burst each way, delivered counts read from the kernel.

One worker (the daemon as it runs by default, no --workers flag), K = 2, a few hundred
datagrams per peer and direction: the test checks that both directions deliver, that nothing
is delivered that was not sent, that the report carries its fields, and that the lab leaves
nothing behind. The rates are not asserted: this machine's load decides them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from netns import require_tools
from scriptrun import namespaces, run_script

from actors.lab.bench import hubload
from actors.lab.pair import Lab

pytestmark = pytest.mark.netns

PEERS = 2
PER_PEER = 256  # datagrams per peer and direction: a short burst
SIZE = 200
SECONDS = 5  # the time bound of each direction's load


def test_hub_load_delivers_both_ways_with_one_worker() -> None:
    require_tools("wg", "ip")
    load = hubload.HubLoad(PEERS, PER_PEER, SIZE, SECONDS, rounds=1)
    lab = Lab(prefix="wgl")
    try:
        lab.create()
        report, errors = hubload.main_hubload(lab, load)
    finally:
        lab.close()
    assert not errors, errors
    assert not [n for n in namespaces() if n.startswith(f"wgl-{lab.tag}-")]
    assert not lab.tmp.exists()

    json.dumps(report)  # the JSON report is plain data
    assert report["ok"] is True and report["hub_load"]["peers"] == PEERS
    (run,) = report["cases"]["wgactors"]["rounds"]
    assert run["exit_status"] == 0
    assert run["encrypted_ahead"] == PEERS * PER_PEER
    for d in ("in", "out"):
        counts = run[f"{d}_load"]
        assert counts["sent"] == PEERS * PER_PEER, (d, counts)
        assert 0 < counts["delivered"] <= counts["sent"], (d, counts)
        assert not counts["timed_out"], (d, counts)
        for key, _, _ in hubload.PHASE_METRICS:
            assert f"{d}_{key}" in run, (d, key, sorted(run))
        assert run[f"{d}_pps"] > 0 and run[f"{d}_mbps"] > 0
        assert run[f"{d}_cpu_pct"] > 0 and run[f"{d}_gen_us_per_pkt"] > 0
        assert run[f"{d}_workers"] == 0  # today's daemon is one process, no children
        assert run[f"{d}_cpu_pct"] == pytest.approx(
            run[f"{d}_parent_cpu_pct"] + run[f"{d}_workers_cpu_pct"]
        )
    summary = report["cases"]["wgactors"]
    assert summary["median"]["in_pps"] == run["in_pps"]
    assert summary["min"]["out_pps"] <= summary["median"]["out_pps"] <= summary["max"]["out_pps"]


def test_hub_load_from_the_command_line(tmp_path: Path) -> None:
    """`scripts/bench --hub-load` end to end, as a person runs it."""
    json_path = tmp_path / "hub.json"
    argv = ["--hub-load", "2", "--hub-packets", "128", "--hub-size", "100", "--quick"]
    returncode, output = run_script("bench", *argv, "--json", str(json_path), timeout=180)
    assert returncode == 0, output
    assert "Hub load: 2 peers" in output and "delivered pkt/s" in output, output
    report = json.loads(json_path.read_text())
    assert report["ok"] is True and list(report["cases"]) == ["wgactors"]
    assert report["cases"]["wgactors"]["median"]["in_pps"] > 0
    assert report["cases"]["wgactors"]["median"]["out_pps"] > 0
