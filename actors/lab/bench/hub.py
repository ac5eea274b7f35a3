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

import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from ..command import LabError, tail, write_secret
from ..hub import UapiTimer, hub_peers, hub_setconf, spare_peer
from ..pair import MTU, TUNNEL_A, TUNNEL_B, UNDERLAY_A, UNDERLAY_B, WG_PORT, Keys, Lab
from ..procfs import find_process, is_wgactors_python, peak_rss_mb
from ..table import print_rows
from ..traffic import iperf3, tcp_mbps
from ..wgactors import launcher_argv, plain_env
from ..wireguard_go import WgPeer, WireguardGo
from .measure import warm_up

SOCKET_TIMEOUT = 15.0  # seconds for the daemon's UAPI socket to answer after launch
SETCONF_TIMEOUT = 600.0  # seconds `wg setconf` of the largest table may take
SHOW_TIMEOUT = 300.0
IFACE_GONE_TIMEOUT = 3.0  # seconds for a stopped end's interface to go
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


def _wait_for_socket(uapi: UapiTimer, proc: subprocess.Popen[Any], log: Any) -> None:
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while True:
        try:
            uapi.get()
            return
        except (OSError, RuntimeError):
            if proc.poll() is not None:
                raise LabError(f"wgactors exited with {proc.returncode}", log) from None
            if time.monotonic() > deadline:
                raise LabError(f"no UAPI socket after {SOCKET_TIMEOUT:g} s", log) from None
            time.sleep(0.05)


def run_hub(lab: Lab, peers: int, serial: int, keys: Keys, seconds: int) -> HubResult:
    result = HubResult(peers)
    m = result.metrics
    (priv_a, pub_a), (_, pub_b) = keys.a, keys.b
    iface_a, iface_b = f"{lab.prefix}{lab.tag}{serial}h", f"{lab.prefix}{lab.tag}{serial}g"
    b = WireguardGo(
        lab.b,
        keys.b[0],
        listen_port=WG_PORT,
        addresses=[f"{TUNNEL_B}/24"],
        peers=[WgPeer(pub_a, [f"{TUNNEL_A}/32"], endpoint=(UNDERLAY_A, WG_PORT))],
        iface=iface_b,
        mtu=MTU,
        binary=lab.wireguard_go,
    )
    proc: subprocess.Popen[Any] | None = None
    log = lab.tmp / f"wgactors-{iface_a}.log"
    try:
        b.start()
        table = list(hub_peers(peers - 1))
        real = (pub_b, f"{TUNNEL_B}/32", f"{UNDERLAY_B}:{WG_PORT}")
        conf = write_secret(lab.tmp / f"{iface_a}.conf", hub_setconf(priv_a, WG_PORT, table, real))
        del table  # the bench's own memory is not the daemon's, but keep it small anyway
        uapi = UapiTimer(iface_a)
        t0 = time.perf_counter()
        with open(log, "wb") as out:
            proc = lab.a.popen(
                *launcher_argv(),
                "-f",
                iface_a,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=plain_env(),
            )
        _wait_for_socket(uapi, proc, log)
        m["launch_s"] = time.perf_counter() - t0
        lab.a.ip("addr", "add", f"{TUNNEL_A}/24", "dev", iface_a)
        lab.a.ip("link", "set", "dev", iface_a, "mtu", MTU, "up")
        t1 = time.perf_counter()
        lab.a.run("wg", "setconf", iface_a, conf, timeout=SETCONF_TIMEOUT)
        m["setconf_s"] = time.perf_counter() - t1
        m["startup_s"] = time.perf_counter() - t0

        pid = find_process(proc.pid, is_wgactors_python)
        warm_up(lab.a, TUNNEL_B, failure="no ping through the last peer", log=log)

        adds, removes = [], []
        for i in range(LIVE_CHANGES):
            key, allowed = spare_peer(peers + i)
            adds.append(uapi.add(key, allowed))
            removes.append(uapi.remove(key))
        m["add_ms"] = 1e3 * statistics.median(adds)
        m["remove_ms"] = 1e3 * statistics.median(removes)
        key, allowed = spare_peer(peers + LIVE_CHANGES)
        t = time.perf_counter()
        lab.a.run("wg", "set", iface_a, "peer", key, "allowed-ips", allowed)
        m["wg_set_add_ms"] = 1e3 * (time.perf_counter() - t)
        t = time.perf_counter()
        lab.a.run("wg", "set", iface_a, "peer", key, "remove")
        m["wg_set_remove_ms"] = 1e3 * (time.perf_counter() - t)

        t = time.perf_counter()
        shown = lab.a.run("wg", "show", iface_a, timeout=SHOW_TIMEOUT).stdout
        m["wg_show_s"] = time.perf_counter() - t
        listed = shown.count("\npeer: ")
        if listed != peers:
            result.errors.append(f"wg show listed {listed} peers, not {peers}")

        # Best of a few: other load on a shared machine only ever lowers a figure.
        m["tcp_up_mbps"] = max(
            tcp_mbps(
                iperf3(lab.a, lab.b, TUNNEL_B, seconds, workdir=lab.tmp, name=f"hub-{serial}-{i}")
            )
            for i in range(THROUGHPUT_RUNS)
        )
        rss = peak_rss_mb(pid) if pid is not None else None
        if rss is not None:
            m["rss_mb"] = rss
    except LabError as e:
        result.errors.append(str(e))
        if e.log is not None:
            result.errors.append(tail(e.log, 10))
    finally:
        if proc is not None:
            lab.a.stop(proc)
            lab.a.wait_link_gone(iface_a, IFACE_GONE_TIMEOUT)
        b.stop()
        lab.b.wait_link_gone(iface_b, IFACE_GONE_TIMEOUT)
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
    print_rows(rows)
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
    keys = Keys.fresh()
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
