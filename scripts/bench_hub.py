"""`scripts/bench --peers N[,N...]`: wgactors as a hub with N peers, against itself with one.

For each table size (and always 1 peer first, as the baseline) it starts a fresh drop-in
``wgactors -f IFACE`` in namespace a and loads the whole table with the real `wg setconf`, the
real wireguard-go peer (namespace b) last. Then it measures:

* start-up: from launching the daemon to `wg setconf` returning (also given apart);
* one live add and one live remove, as the daemon's UAPI round trip (median of a few) and as
  the wall time of the `wg set` command;
* `wg show` wall time, with every peer in its output;
* iperf3 TCP upload to the real peer, the last one configured (best of THROUGHPUT_RUNS),
  against the 1-peer figure;
* the daemon's peak RSS (VmHWM).

The targets are the issue's, at 100,000 peers; a MISS is a finding, not an error.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import bench
import demo
from demo import TUNNEL_A, TUNNEL_B, DemoError, Lab
from hub import UapiTimer, hub_peers, hub_setconf, spare_peer

SOCKET_TIMEOUT = 15.0  # seconds for the daemon's UAPI socket to answer after launch
SETCONF_TIMEOUT = 600.0  # seconds `wg setconf` of the largest table may take
SHOW_TIMEOUT = 300.0
LIVE_CHANGES = 5  # live add/remove pairs; the median is reported
TARGET_PEERS = 100_000
TARGETS = {  # at TARGET_PEERS
    "startup_s": 10.0,
    "add_ms": 5.0,
    "remove_ms": 5.0,
    "rss_mb": 400.0,
}
THROUGHPUT_RUNS = 3  # iperf3 uploads per table size; the best counts
THROUGHPUT_TOLERANCE = 0.05  # one peer's throughput within 5% of the 1-peer figure


@dataclass
class HubResult:
    peers: int
    metrics: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _wait_for_socket(uapi: UapiTimer, proc: demo.Proc) -> None:
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while True:
        try:
            uapi.get()
            return
        except (OSError, RuntimeError):
            if proc.popen.poll() is not None:
                raise DemoError(f"wgactors exited with {proc.popen.returncode}", proc.log) from None
            if time.monotonic() > deadline:
                raise DemoError(f"no UAPI socket after {SOCKET_TIMEOUT:g} s", proc.log) from None
            time.sleep(0.05)


def run_hub(
    lab: Lab, peers: int, serial: int, keys: dict[str, tuple[str, str]], seconds: int
) -> HubResult:
    result = HubResult(peers)
    m = result.metrics
    (priv_a, pub_a), (priv_b, pub_b) = keys["a"], keys["b"]
    iface_a, iface_b = f"{bench.PREFIX}{lab.tag}{serial}h", f"{bench.PREFIX}{lab.tag}{serial}g"
    endpoint_a = f"{demo.UNDERLAY_A}:{demo.WG_PORT}"
    endpoint_b = f"{demo.UNDERLAY_B}:{demo.WG_PORT}"
    started: list[tuple[str, str, demo.Proc]] = []
    try:
        b = demo.start_wireguard_go(
            lab, lab.ns_b, iface_b, priv_b, pub_a, TUNNEL_B, TUNNEL_A, endpoint_a
        )
        started.append((lab.ns_b, iface_b, b))
        table = list(hub_peers(peers - 1))
        conf = lab.key_file(
            f"{iface_a}.conf",
            hub_setconf(priv_a, demo.WG_PORT, table, (pub_b, f"{TUNNEL_B}/32", endpoint_b)),
        )
        del table  # the bench's own memory is not the daemon's, but keep it small anyway
        env = {k: v for k, v in os.environ.items() if k not in demo.WGACTORS_ENV_DROP}
        uapi = UapiTimer(iface_a)
        t0 = time.perf_counter()
        a = lab.start(lab.ns_a, f"wgactors-{iface_a}", demo.LAUNCHER, "-f", iface_a, env=env)
        lab.sockets.append(demo.WG_SOCKET_DIR / f"{iface_a}.sock")
        started.append((lab.ns_a, iface_a, a))
        _wait_for_socket(uapi, a)
        m["launch_s"] = time.perf_counter() - t0
        lab.exec(lab.ns_a, "ip", "addr", "add", f"{TUNNEL_A}/24", "dev", iface_a)
        lab.exec(lab.ns_a, "ip", "link", "set", "dev", iface_a, "mtu", demo.MTU, "up")
        t1 = time.perf_counter()
        lab.exec(lab.ns_a, "wg", "setconf", iface_a, conf, timeout=SETCONF_TIMEOUT)
        m["setconf_s"] = time.perf_counter() - t1
        m["startup_s"] = time.perf_counter() - t0

        pid = bench.find_process(a.popen.pid, bench.is_wgactors_python)
        for attempt in range(1, bench.WARMUP_TRIES + 1):
            try:
                bench.ping_avg(lab, TUNNEL_B, count=1)
                break
            except DemoError:
                if attempt == bench.WARMUP_TRIES:
                    raise DemoError("no ping through the last peer", a.log) from None

        adds, removes = [], []
        for i in range(LIVE_CHANGES):
            key, allowed = spare_peer(peers + i)
            adds.append(uapi.add(key, allowed))
            removes.append(uapi.remove(key))
        m["add_ms"] = 1e3 * statistics.median(adds)
        m["remove_ms"] = 1e3 * statistics.median(removes)
        key, allowed = spare_peer(peers + LIVE_CHANGES)
        t = time.perf_counter()
        lab.exec(lab.ns_a, "wg", "set", iface_a, "peer", key, "allowed-ips", allowed)
        m["wg_set_add_ms"] = 1e3 * (time.perf_counter() - t)
        t = time.perf_counter()
        lab.exec(lab.ns_a, "wg", "set", iface_a, "peer", key, "remove")
        m["wg_set_remove_ms"] = 1e3 * (time.perf_counter() - t)

        t = time.perf_counter()
        shown = lab.exec(lab.ns_a, "wg", "show", iface_a, timeout=SHOW_TIMEOUT).stdout
        m["wg_show_s"] = time.perf_counter() - t
        listed = shown.count("\npeer: ")
        if listed != peers:
            result.errors.append(f"wg show listed {listed} peers, not {peers}")

        # Best of a few: other load on a shared machine only ever lowers a figure.
        m["tcp_up_mbps"] = max(
            bench.tcp_mbps(bench.iperf3(lab, f"hub-{serial}-{i}", seconds))
            for i in range(THROUGHPUT_RUNS)
        )
        rss = bench.peak_rss_mb(pid) if pid is not None else None
        if rss is not None:
            m["rss_mb"] = rss
    except DemoError as e:
        result.errors.append(str(e))
        if e.log is not None:
            result.errors.append(demo.tail(e.log, 10))
    finally:
        demo.stop_ends(lab, started)
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_hub_report(results: list[HubResult]) -> list[str]:
    """The table, and the target verdicts at TARGET_PEERS; returns the misses."""
    base = next((r.metrics.get("tcp_up_mbps") for r in results if r.peers == 1), None)
    columns = (
        ("peers", "", None),
        ("start-up s", "startup_s", ".2f"),
        ("(setconf s)", "setconf_s", ".2f"),
        ("peak RSS MB", "rss_mb", ".0f"),
        ("add ms", "add_ms", ".2f"),
        ("remove ms", "remove_ms", ".2f"),
        ("wg set add/rm ms", "", None),
        ("wg show s", "wg_show_s", ".2f"),
        ("TCP Mbit/s", "tcp_up_mbps", ".0f"),
        ("vs 1 peer", "", None),
    )
    rows = [[c[0] for c in columns]]
    for r in results:
        m = r.metrics
        tcp = m.get("tcp_up_mbps")
        row = []
        for title, key, spec in columns:
            if title == "peers":
                row.append(f"{r.peers:,}")
            elif title == "wg set add/rm ms":
                add, rm = m.get("wg_set_add_ms"), m.get("wg_set_remove_ms")
                row.append(f"{_fmt(add, '.1f')}/{_fmt(rm, '.1f')}")
            elif title == "vs 1 peer":
                row.append(_fmt(tcp / base if tcp and base else None, ".2f"))
            else:
                assert spec is not None
                row.append(_fmt(m.get(key), spec))
        rows.append(row)
    demo.print_rows(rows)
    misses: list[str] = []
    target = next((r for r in results if r.peers == TARGET_PEERS), None)
    if target is None:
        print(f"\ntargets apply at {TARGET_PEERS:,} peers (not run)")
        return misses
    print(f"\ntargets at {TARGET_PEERS:,} peers:")
    for key, limit in TARGETS.items():
        value = target.metrics.get(key)
        ok = value is not None and value <= limit
        print(f"  {'PASS' if ok else 'MISS'}  {key} {_fmt(value, '.2f')} <= {limit:g}")
        if not ok:
            misses.append(key)
    tcp = target.metrics.get("tcp_up_mbps")
    ok = bool(tcp and base and tcp >= (1 - THROUGHPUT_TOLERANCE) * base)
    shown = _fmt(tcp / base if tcp and base else None, ".3f")
    print(f"  {'PASS' if ok else 'MISS'}  throughput {shown} of the 1-peer figure (>= 0.95)")
    if not ok:
        misses.append("throughput")
    return misses


def main_hub(lab: Lab, sizes: list[int], seconds: int) -> tuple[list[HubResult], list[str]]:
    """Run every size (1 first, as the baseline); the results and the errors."""
    keys = {"a": demo.wg_keypair(), "b": demo.wg_keypair()}
    results: list[HubResult] = []
    errors: list[str] = []
    for serial, peers in enumerate(sorted({1, *sizes}), 1):
        print(f"bench: hub of {peers:,} peers ...", flush=True)
        r = run_hub(lab, peers, serial, keys, seconds)
        results.append(r)
        shown = ", ".join(f"{k} {v:.3g}" for k, v in r.metrics.items())
        print(f"         {shown or 'no figures'}", flush=True)
        for e in r.errors:
            errors.append(f"{peers} peers: {e}")
            print(f"         FAILED: {e}", flush=True)
    return results, errors


def to_json(results: list[HubResult]) -> list[dict[str, Any]]:
    return [{"peers": r.peers, "metrics": r.metrics, "errors": r.errors} for r in results]
