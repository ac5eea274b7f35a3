"""Unit tests of the lab's pieces that need no namespaces (actors.lab, the bench's registry,
options and arithmetic): errors, /proc readers, config files, dump parsing, CPU pinning,
targets, bounded waits, the baseline checkout's launcher."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from netns import require_tools

from actors.lab import (
    CommandError,
    CommandTimeout,
    LabError,
    Netns,
    host_route,
    parse_dump,
    pinned,
    run,
    wait_for,
    wait_until,
    wireguard_go_peering,
    write_conf,
)
from actors.lab.bench import cases, cli, stats
from actors.lab.bench.measure import Pinning, RunResult
from actors.lab.procfs import (
    context_switches,
    cpu_seconds,
    find_process,
    is_wireguard_go,
    peak_rss_mb,
)
from actors.lab.wgactors import LAUNCHER, launcher_argv


def test_command_errors_are_lab_errors_and_stdlib_errors() -> None:
    with pytest.raises(CommandError) as failed:
        run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert isinstance(failed.value, subprocess.CalledProcessError)
    assert isinstance(failed.value, LabError) and failed.value.log is None
    assert failed.value.returncode == 3
    assert "err" in str(failed.value) and "out" in str(failed.value)
    assert run(["sh", "-c", "exit 3"], check=False).returncode == 3
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as slow:
        run(["sleep", "5"], timeout=0.2)
    assert isinstance(slow.value, subprocess.TimeoutExpired)
    assert isinstance(slow.value, LabError)
    assert time.monotonic() - started < 3


def test_pinned_prefix() -> None:
    assert pinned(None) == []
    assert pinned("1,3") == ["taskset", "-c", "1,3"]


def test_context_switches_count_every_thread() -> None:
    before = context_switches(os.getpid())
    slept, done = threading.Event(), threading.Event()

    def sleeper() -> None:
        for _ in range(20):
            time.sleep(0.001)  # each sleep is at least one voluntary switch of this thread
        slept.set()
        done.wait(5)  # stay alive: a thread's switches count only while it lives

    worker = threading.Thread(target=sleeper)
    worker.start()
    try:
        assert slept.wait(5)
        during = context_switches(os.getpid())
    finally:
        done.set()
        worker.join()
    assert before is not None and during is not None
    assert during >= before + 20
    assert context_switches(2**22 + 12345) is None  # no such process


def test_cpu_and_rss_of_this_process() -> None:
    cpu0 = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    cpu1 = cpu_seconds(os.getpid())
    assert cpu0 is not None and cpu1 is not None and cpu1 >= cpu0
    rss = peak_rss_mb(os.getpid())
    assert rss is not None and 1 < rss < 4096


def test_find_process_walks_descendants() -> None:
    child = subprocess.Popen(["sh", "-c", "sleep 5 & wait"])
    try:
        deadline = time.monotonic() + 3
        found = None
        while found is None and time.monotonic() < deadline:
            found = find_process(child.pid, lambda _pid, argv: argv[:1] == ["sleep"])
            time.sleep(0.02)
        assert found is not None and found != child.pid
        assert find_process(child.pid, is_wireguard_go) is None
    finally:
        child.kill()
        child.wait()


def test_write_conf_is_private_and_leaves_out_none(tmp_path: Path) -> None:
    path = write_conf(
        tmp_path,
        "wgx0",
        {"PrivateKey": "k", "ListenPort": 51820, "MTU": None},
        [{"PublicKey": "p", "AllowedIPs": "10.0.0.2/32", "Endpoint": None}],
    )
    assert path == tmp_path / "wgx0.conf"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text == (
        "[Interface]\nPrivateKey = k\nListenPort = 51820\n\n[Peer]\nPublicKey = p\n"
        "AllowedIPs = 10.0.0.2/32\n"
    )


def test_host_route() -> None:
    assert host_route("10.0.0.1/24") == "10.0.0.1/32"
    assert host_route("fd00::1/64") == "fd00::1/128"
    assert host_route("10.0.0.1") == "10.0.0.1/32"


def test_wireguard_go_peering_config_reaches_the_peer(tmp_path: Path) -> None:
    """Nothing starts: the wireguard-go it returns is not running yet."""
    require_tools("wg")
    wggo, conf, our_public = wireguard_go_peering(
        Netns("never-created"),
        tmp_path,
        "wgp0",
        ours=["10.5.0.1/24", "fd05::1/64"],
        theirs=["10.5.0.2/24", "fd05::2/64"],
        extra_addresses=["10.5.0.3/24"],
        their_underlay="10.6.0.2",
        our_underlay="10.6.0.1",
        mtu=1420,
        peer={"PersistentKeepalive": 25},
    )
    assert wggo.proc is None and wggo.mtu == 1420 and wggo.listen_port == 51820
    assert wggo.addresses == ["10.5.0.2/24", "fd05::2/64", "10.5.0.3/24"]
    (peer,) = wggo.initial_peers
    assert peer.public_key == our_public
    assert list(peer.allowed_ips) == ["10.5.0.1/32", "fd05::1/128"]
    assert peer.endpoint == ("10.6.0.1", 51821)
    text = conf.read_text()
    assert "ListenPort = 51821\nAddress = 10.5.0.1/24, fd05::1/64\n" in text
    assert f"PublicKey = {wggo.public_key}\n" in text
    assert "AllowedIPs = 10.5.0.2/32, fd05::2/128\nEndpoint = 10.6.0.2:51820\n" in text
    assert text.endswith("PersistentKeepalive = 25\n")


def test_parse_dump() -> None:
    text = "priv\tpub\t51820\toff\npeer\t(none)\t10.0.0.1:1\t10.9.0.2/32\t17\t100\t200\t25\n"
    iface, peers = parse_dump(text)
    assert iface["listen_port"] == 51820
    (peer,) = peers
    assert (peer.public_key, peer.preshared_key, peer.endpoint) == ("peer", None, "10.0.0.1:1")
    assert (peer.latest_handshake, peer.rx_bytes, peer.tx_bytes) == (17, 100, 200)
    assert peer.persistent_keepalive == 25 and peer.allowed_ips == ["10.9.0.2/32"]
    assert parse_dump("") == ({}, [])


def test_pinning_splits_the_cpus_in_halves() -> None:
    assert Pinning.split([1, 0]) == Pinning("0", "1")
    assert Pinning.split([0, 1, 2, 3, 4]) == Pinning("0,1", "2,3,4")
    with pytest.raises(LabError, match="at least 2"):
        Pinning.split([0])


def test_case_registry_and_aliases() -> None:
    assert cases.default_cases() == ["veth", "reference", "wgactors", "wgactors-single"]
    assert cases.parse_cases("single, plain,ref") == ["veth", "reference", "wgactors-single"]
    with pytest.raises(Exception, match="unknown case"):
        cases.parse_cases("nope")
    assert cases.WGACTORS_CASES == (
        "wgactors",
        "wgactors-single",
        "wgactors-spread",
        "wgactors-single-spread",
    )
    # the spread cases run only when asked for, and carry their setting to the daemon
    spread = list(cases.WGACTORS_CASES[2:])
    assert [k for k, c in cases.CASES.items() if not c.default and not c.baseline] == spread
    assert cases.parse_cases("single-spread,actors-spread") == spread
    assert dict(cases.CASES["wgactors-spread"].env) == {"WGACTORS_CPUS": "all"}


def _checkout(path: Path, *, venv: bool) -> Path:
    """A directory that looks like a wgactors checkout (nothing in it runs)."""
    (path / "actors").mkdir(parents=True)
    (path / "actors" / "__init__.py").write_text("")
    (path / "scripts").mkdir()
    (path / "scripts" / "wgactors").write_text("#!/bin/sh\n")
    if venv:
        (path / ".venv" / "bin").mkdir(parents=True)
        (path / ".venv" / "bin" / "python").write_text("")
    return path


def test_every_wgactors_case_has_a_baseline_twin_next_to_it() -> None:
    for key in cases.WGACTORS_CASES:
        case, twin = cases.CASES[key], cases.CASES[f"{key}@base"]
        assert twin.baseline and not twin.default and not case.baseline
        assert (twin.wgactors_args, twin.env) == (case.wgactors_args, case.env)
        assert twin.aliases == tuple(f"{a}@base" for a in case.aliases)
        keys = list(cases.CASES)
        assert keys.index(twin.key) == keys.index(key) + 1
    assert tuple(f"{k}@base" for k in cases.WGACTORS_CASES) == cases.BASELINE_CASES
    assert not any(cases.CASES[k].baseline for k in cases.default_cases())


def test_baseline_option_adds_the_twins_of_the_chosen_wgactors_cases(tmp_path: Path) -> None:
    base = _checkout(tmp_path / "base", venv=True)
    args = cli.parse_args(["--cases", "actors,ref", "--baseline", str(base), "--rounds", "1"])
    assert args.cases == ["reference", "wgactors", "wgactors@base"]
    assert args.baseline == base.resolve()
    args = cli.parse_args(["--baseline", str(base)])
    assert args.cases == [
        "veth",
        "reference",
        "wgactors",
        "wgactors@base",
        "wgactors-single",
        "wgactors-single@base",
    ]
    args = cli.parse_args(["--cases", "single@base", "--baseline", str(base)])
    assert args.cases == ["wgactors-single@base"]
    assert cli.parse_args(["--cases", "actors"]).baseline is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--cases", "actors@base"],  # a baseline case with no baseline
        ["--baseline", "NOT_A_CHECKOUT"],
        ["--baseline", "CHECKOUT", "--peers", "1000"],
    ],
)
def test_baseline_option_refuses(argv: list[str], tmp_path: Path) -> None:
    base = _checkout(tmp_path / "base", venv=True)
    argv = [
        str(base) if a == "CHECKOUT" else str(tmp_path) if a == "NOT_A_CHECKOUT" else a
        for a in argv
    ]
    with pytest.raises(SystemExit) as refused:
        cli.parse_args(argv)
    assert refused.value.code == 2


def test_launcher_of_another_checkout(tmp_path: Path) -> None:
    assert launcher_argv() == [str(LAUNCHER)]
    own = _checkout(tmp_path / "own", venv=True)
    assert launcher_argv(own) == [str(own / "scripts" / "wgactors")]
    # no .venv of its own: this interpreter runs that checkout's code, not this one's
    bare = _checkout(tmp_path / "bare", venv=False)
    assert launcher_argv(bare) == ["env", f"PYTHONPATH={bare}", sys.executable, "-m", "actors.cli"]
    with pytest.raises(LabError, match="not a wgactors checkout"):
        launcher_argv(tmp_path)


def test_comparison_with_the_baseline_flags_a_median_beyond_its_range() -> None:
    runs = {
        "wgactors": [_run("wgactors", tcp_up_mbps=80.0, ping_idle_ms=0.30)],
        "wgactors@base": [
            _run("wgactors@base", tcp_up_mbps=u, ping_idle_ms=p)
            for u, p in ((90.0, 0.25), (100.0, 0.28), (110.0, 0.31))
        ],
        "wgactors-single": [_run("wgactors-single", tcp_up_mbps=95.0, ping_idle_ms=0.5)],
    }
    summary = {c: stats.summarize(r) for c, r in runs.items()}
    comparison = stats.compare_to_baseline(summary)
    assert list(comparison) == ["wgactors"]  # no twin for single: nothing to compare
    up, idle = comparison["wgactors"]["tcp_up_mbps"], comparison["wgactors"]["ping_idle_ms"]
    assert up == {"ratio": pytest.approx(0.8), "worse": True}  # below the slowest round
    assert idle == {"ratio": pytest.approx(0.30 / 0.28), "worse": False}  # within the range
    assert "udp_pps" not in comparison["wgactors"]


def test_wait_until_and_wait_for_are_bounded() -> None:
    ready = threading.Event()
    timer = threading.Timer(0.05, ready.set)
    timer.start()
    try:
        assert wait_until(ready.is_set, timeout=5, step=0.01)
    finally:
        timer.cancel()
    assert not wait_until(lambda: False, timeout=0.05, step=0.01)
    with pytest.raises(LabError, match=r"the flag not reached within 0\.05 s"):
        wait_for(lambda: False, timeout=0.05, step=0.01, what="the flag")
    wait_for(ready.is_set, timeout=0.05)


def _run(case: str, **metrics: float) -> RunResult:
    return RunResult(case, 1, metrics=dict(metrics))


def test_medians_ratios_and_targets() -> None:
    runs = {
        "veth": [_run("veth", tcp_sum_mbps=s, udp_pps=100.0, ping_idle_ms=0.05) for s in (4, 5)],
        "reference": [
            _run("reference", tcp_up_mbps=1, tcp_down_mbps=1, tcp_sum_mbps=2, ping_idle_ms=0.3)
        ],
        "wgactors": [
            _run(
                "wgactors",
                tcp_up_mbps=u,
                tcp_down_mbps=1,
                tcp_sum_mbps=u + 1,
                rss_mb=r,
                ping_idle_ms=0.55,
            )
            for u, r in ((0.5, 40), (1.0, 90), (2.0, 50))
        ],
        "wgactors-single": [
            _run(
                "wgactors-single",
                tcp_up_mbps=1,
                tcp_down_mbps=1,
                tcp_sum_mbps=2,
                rss_mb=30,
                ping_idle_ms=0.4,
            )
        ],
    }
    summary = {c: stats.summarize(r) for c, r in runs.items()}
    assert summary["veth"]["median"]["tcp_sum_mbps"] == 4.5
    assert summary["wgactors"]["min"]["tcp_up_mbps"] == 0.5
    assert summary["wgactors"]["max"]["rss_mb"] == 90
    ratios = stats.compute_ratios(summary)
    assert ratios["wgactors"]["updown_vs_reference"] == 1.0
    assert ratios["reference"]["updown_share_of_veth"] == pytest.approx(2 / 4.5)
    assert ratios["actors_vs_single_updown"] == 1.0
    statuses = [t["status"] for t in stats.check_targets(ratios, summary)]
    # throughput 1.0x and each way 1.0x: PASS; 1.0x single-threaded: PASS; latency added
    # +0.25 ms against single-threaded's +0.1 ms: MISS; the highest RSS, 90 MB: MISS.
    assert statuses == ["PASS", "PASS", "MISS", "MISS"]
    summary.pop("wgactors-single")
    statuses = [t["status"] for t in stats.check_targets(stats.compute_ratios(summary), summary)]
    assert statuses == ["PASS", "SKIP", "SKIP", "MISS"]
