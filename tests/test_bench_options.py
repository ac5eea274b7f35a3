"""`scripts/bench`'s --workers, --reference and --hub-load options, and the hub load's pure
parts (addresses, inner packets, the comparison and targets); nothing here needs root."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.lab import procfs
from actors.lab.bench import cases, cli, hubload, stats
from actors.lab.bench.measure import RunResult
from actors.lab.loadgen import (
    DAEMON_ADDRESS,
    MAX_PEERS,
    SINK_PORT,
    PhaseResult,
    inner_udp,
    peer_address,
    sockaddr_in,
)
from actors.lab.pair import Lab
from actors.lab.traffic import tcp_retransmits
from actors.lab.wireguard_go import DEFAULT_BINARY
from actors.packet import Packet


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    """--workers registers cases in the process-wide registry: put it back afterwards."""
    saved = dict(cases.CASES)
    yield
    cases.CASES.clear()
    cases.CASES.update(saved)


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_workers_make_one_case_each_in_place_of_wgactors() -> None:
    args = cli.parse_args(["--workers", "1,2,auto", "--cases", "single,actors,ref"])
    assert args.cases == [
        "reference",
        "wgactors-w1",
        "wgactors-w2",
        "wgactors-wauto",
        "wgactors-single",
    ]
    for value in ("1", "2", "auto"):
        case = cases.CASES[f"wgactors-w{value}"]
        assert case.wgactors_args == ("--workers", value)
        assert case.is_wgactors and not case.default and not case.baseline
    # once registered, the aliases name them too
    assert cases.parse_cases("actors-w2") == ["wgactors-w2"]


def test_without_workers_the_daemon_gets_no_workers_flag() -> None:
    args = cli.parse_args([])
    assert args.workers is None
    assert args.cases == ["veth", "reference", "wgactors", "wgactors-single"]
    for key in args.cases:
        assert "--workers" not in (cases.CASES[key].wgactors_args or ())
    settings = cli.hub_load_settings(cli.parse_args(["--hub-load", "2"]))
    assert settings.workers == (None,) and settings.cases == ["wgactors"]


def test_workers_values_are_parsed_once_each_in_order() -> None:
    assert cases.parse_workers("2, 1,AUTO,2") == ["2", "1", "auto"]
    assert cases.parse_workers("04") == ["4"]
    for bad in ("0", "x", "", "1025", "1.5"):
        with pytest.raises(Exception, match=r"workers|worker count"):
            cases.parse_workers(bad)


def test_workers_cases_get_baseline_twins(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "actors").mkdir(parents=True)
    (base / "actors" / "__init__.py").write_text("")
    (base / "scripts").mkdir()
    (base / "scripts" / "wgactors").write_text("#!/bin/sh\n")
    args = cli.parse_args(["--workers", "2", "--cases", "actors", "--baseline", str(base)])
    assert args.cases == ["wgactors-w2", "wgactors-w2@base"]
    assert cases.CASES["wgactors-w2@base"].wgactors_args == ("--workers", "2")


def test_reference_binary_reaches_every_wireguard_go_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("actors.lab.wireguard_go.public_key", lambda _private: "public")
    exe = _executable(tmp_path / "wg-go-new")
    args = cli.parse_args(["--reference", str(exe)])
    assert args.reference == str(exe.resolve())
    assert cli.parse_args([]).reference is None
    lab = Lab(prefix="wgt", wireguard_go=args.reference)
    try:
        end = lab._wireguard_go(lab.b, "k", "10.99.0.2", "p", "10.99.0.1", "10.88.0.1", "x", None)
        assert end.binary == str(exe.resolve())
    finally:
        lab.close()
    assert Lab(prefix="wgt").wireguard_go == DEFAULT_BINARY
    # the reference case's process is found under its launcher whatever the file is called
    match = procfs.runs_binary(str(exe))
    assert match(1, [str(exe)]) and match(1, ["wg-go-new", "-f", "x"])
    assert not match(1, ["wireguard-go", "-f", "x"]) and not match(1, [])


@pytest.mark.parametrize("what", ["missing", "not executable"])
def test_reference_refuses_what_cannot_run(what: str, tmp_path: Path) -> None:
    path = tmp_path / "wireguard-go"
    if what == "not executable":
        path.write_text("")
        path.chmod(0o644)
    with pytest.raises(SystemExit) as refused:
        cli.parse_args(["--reference", str(path)])
    assert refused.value.code == 2


def test_hub_load_settings(tmp_path: Path) -> None:
    args = cli.parse_args(
        ["--hub-load", "8", "--workers", "1,2,auto", "--hub-packets", "1_000", "--hub-size", "200"]
    )
    load = cli.hub_load_settings(args)
    assert (load.peers, load.per_peer, load.size) == (8, 1000, 200)
    assert load.workers == ("1", "2", "auto")
    assert load.cases == ["wgactors-w1", "wgactors-w2", "wgactors-wauto"]
    assert (load.seconds, load.rounds) == (args.seconds, args.rounds)


@pytest.mark.parametrize(
    "argv",
    [
        ["--hub-load", "0"],
        ["--hub-load", str(MAX_PEERS + 1)],
        ["--hub-load", "2", "--peers", "1000"],
        ["--hub-load", "2", "--reference", "EXE"],
        ["--hub-load", "2", "--hub-size", "20"],
        ["--hub-load", "2", "--hub-packets", "0"],
        ["--workers", "2", "--peers", "1000"],
        ["--workers", "0"],
    ],
)
def test_hub_load_and_workers_refuse(argv: list[str], tmp_path: Path) -> None:
    exe = str(_executable(tmp_path / "wireguard-go"))
    with pytest.raises(SystemExit) as refused:
        cli.parse_args([exe if a == "EXE" else a for a in argv])
    assert refused.value.code == 2


def test_peer_addresses_skip_network_and_broadcast() -> None:
    assert peer_address(0) == "10.99.1.1"
    assert peer_address(253) == "10.99.1.254"
    assert peer_address(254) == "10.99.2.1"
    addresses = [peer_address(i) for i in range(MAX_PEERS)]
    assert len(set(addresses)) == MAX_PEERS
    assert not any(a.endswith((".0", ".255")) or a == DAEMON_ADDRESS for a in addresses)
    with pytest.raises(ValueError):
        peer_address(MAX_PEERS)


def test_inner_packet_is_valid_udp_to_the_sink() -> None:
    data = inner_udp("10.99.1.1", DAEMON_ADDRESS, 200, 40000, SINK_PORT)
    assert len(data) == 200
    Packet(data)  # the core accepts it as one packet
    words = struct.unpack("!10H", data[:20])
    assert sum(words) % 0xFFFF == 0  # the header checksum is right
    assert socket.inet_ntoa(data[12:16]) == "10.99.1.1"
    assert struct.unpack("!HHH", data[20:26]) == (40000, SINK_PORT, 180)
    addr = sockaddr_in("10.99.1.1", 9)
    assert len(addr) == 16 and addr[2:4] == b"\x00\x09" and addr[4:8] == bytes([10, 99, 1, 1])


def _summary(pps_in: float, pps_out: float, cost: float) -> dict[str, dict[str, float]]:
    run = RunResult("x", 1)
    run.metrics.update(
        {
            "in_pps": pps_in,
            "out_pps": pps_out,
            "in_cpu_us_per_pkt": cost,
            "out_cpu_us_per_pkt": cost,
        }
    )
    return hubload.summarize([run])


def test_hub_targets_compare_two_workers_with_one() -> None:
    summary = {
        "wgactors-w1": _summary(100_000, 200_000, 10.0),
        "wgactors-w2": _summary(160_000, 250_000, 10.5),
    }
    targets = {t["target"]: t["status"] for t in hubload.check_targets(summary)}
    assert list(targets.values()) == ["PASS", "PASS", "MISS", "PASS"], targets
    over = hubload.compare(summary)["wgactors-w2"]
    assert over["in_pps"] == pytest.approx(1.6) and over["out_pps"] == pytest.approx(1.25)
    # no targets unless both 1 and 2 workers ran
    assert hubload.check_targets({"wgactors": summary["wgactors-w1"]}) == []
    assert hubload.compare({"wgactors": summary["wgactors-w1"]}) == {}


def test_children_of_a_process_are_listed() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        assert pid in procfs.children(os.getpid())
    finally:
        os.waitpid(pid, 0)
    assert procfs.children(2**22 + 12345) == []


def test_run_seconds_reads_every_thread() -> None:
    seconds = procfs.run_seconds(os.getpid())
    assert seconds is not None and seconds > 0
    assert procfs.run_seconds(2**22 + 12345) is None


def _tcp(updown: float, retrans: float) -> dict[str, dict[str, float]]:
    run = RunResult("x", 1)
    run.metrics.update({"tcp_sum_mbps": updown, "tcp_retrans": retrans})
    return stats.summarize([run])


@pytest.mark.parametrize(
    ("two", "status"),
    [((980.0, 10.0), "PASS"), ((900.0, 10.0), "MISS"), ((1000.0, 11.0), "MISS")],
)
def test_tcp_target_two_workers_against_one(two: tuple[float, float], status: str) -> None:
    summary = {"wgactors-w1": _tcp(1000.0, 10.0), "wgactors-w2": _tcp(*two)}
    ratios = stats.compute_ratios(summary)
    assert ratios["workers_vs_first"]["first"] == "wgactors-w1"
    row = ratios["workers_vs_first"]["cases"]["wgactors-w2"]
    assert row["updown"] == pytest.approx(two[0] / 1000.0)
    targets = stats.check_targets(ratios, summary)
    assert [t["status"] for t in targets if "2 workers" in t["target"]] == [status]
    # without both worker counts the bench checks its four targets, as before
    alone = {"wgactors": _tcp(1000.0, 10.0)}
    assert len(stats.check_targets(stats.compute_ratios(alone), alone)) == 4


def test_retransmissions_come_from_the_sender() -> None:
    assert tcp_retransmits({"end": {"sum_sent": {"retransmits": 7}}}) == 7
    assert tcp_retransmits({"end": {"sum_sent": {}}}) is None
    assert tcp_retransmits({}) is None


def test_hub_load_counts_each_child_process_apart() -> None:
    """The workers-to-be: a child process's CPU is counted apart from its parent's."""
    before = hubload.ProcSnapshot.read(os.getpid())
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nfor _ in range(2_000_000): pass\ntime.sleep(30)"]
    )
    try:
        deadline = time.monotonic() + 20
        while (procfs.run_seconds(child.pid) or 0) < 0.01 and time.monotonic() < deadline:
            time.sleep(0.01)
        after = hubload.ProcSnapshot.read(os.getpid())
    finally:
        child.kill()
        child.wait(5)
    assert child.pid in after.children and child.pid not in before.children
    phase = PhaseResult(sent=100, delivered=100, seconds=1.0, generator_cpu_s=0.001)
    result = RunResult("wgactors-w2", 1)
    hubload.record_phase(result, "in", phase, before, after, 200)
    assert result.extra["in_workers"] >= 1
    assert result.metrics["in_workers_cpu_pct"] > 0
    (key,) = [k for k in result.extra["in_worker_cpu_pct"] if k.startswith(f"{child.pid} ")]
    assert result.extra["in_worker_cpu_pct"][key] > 0
    assert result.metrics["in_cpu_pct"] == pytest.approx(
        result.metrics["in_parent_cpu_pct"] + result.metrics["in_workers_cpu_pct"]
    )
    assert "child processes" in hubload.per_process(result, "in")
