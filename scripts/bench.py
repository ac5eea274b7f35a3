"""Side-by-side benchmark: wgactors against the reference wireguard-go, in network namespaces.

Run through ``sudo scripts/bench`` (which first runs ``scripts/setup``). As root it builds the
lab of ``actors.lab.pair``: two network namespaces joined by an underlay veth pair
(10.88.0.1/24 <-> 10.88.0.2/24) and a plain veth pair at MTU 1280 (10.89.0.1/24 <->
10.89.0.2/24), and measures these cases (the registry ``CASES``):

1. ``veth``: no tunnel at all, over the plain pair: the ceiling of this machine, so every
   other figure can be read as a share of it;
2. ``reference``: wireguard-go in both namespaces (tunnel 10.99.0.1 <-> 10.99.0.2, MTU 1280);
3. ``wgactors``: ``scripts/wgactors up`` in namespace a, wireguard-go in b;
4. ``wgactors-single``: the same with ``--single-threaded``;
5. ``wgactors-spread`` and ``wgactors-single-spread`` (only when named in ``--cases``): the
   two modes with ``WGACTORS_CPUS=all``, threads placed by the kernel instead of all on one CPU
   (the default, ``actors.placement``).

Each of ``--rounds`` rounds runs every case once, round-robin, so that machine noise hits all
cases alike; every case run starts fresh tunnel ends and measures, from namespace a:

* iperf3 TCP upload and download (``-t SECONDS``, the receiver's bits per second);
* UDP packets per second with small packets (``iperf3 -u -l 64 -b 0``, upload; the packets
  the receiver got, per second);
* ping latency (``ping -c 20 -i 0.05``, average rtt), idle and while a TCP upload runs;
* the a end's peak RSS (VmHWM), CPU time (utime + stime, as % of one core over the wall time
  of the measurements) and context switches (voluntary + involuntary, summed over
  ``/proc/PID/task/*/status``) per 1000 packets through its interface (rx + tx counters).

``--pin`` puts the peer's side (wireguard-go in b and the iperf3 server) on one half of the
usable CPUs and the side under test (the a end and the iperf3 client) on the other half.

It prints the median of the rounds with min and max, the ratios to the reference and to the
plain veth, and PASS/MISS for each target. A MISS does not change the exit status: 0 when every
measurement worked, 1 when something broke (the failures are listed), 130 when interrupted.
Everything it created is removed on the way out, also on Ctrl-C or SIGTERM; no traffic leaves
its own namespaces.

Measurements that are not a tunnel case (an in-process per-packet cost, a many-peer run) plug
in as their own option and section next to the case table; a new tunnel flavour is one more
``register_case`` call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors import corebench
from actors.lab import (
    MTU,
    PLAIN_A,
    PLAIN_B,
    TUNNEL_B,
    Keys,
    Lab,
    LabError,
    Netns,
    Tunnel,
    iperf3,
    ping,
    preflight,
    print_rows,
    run,
    tail,
    tcp_mbps,
    udp_received_pps,
)
from actors.lab.procfs import (
    context_switches_by_thread,
    cpu_seconds,
    link_packets,
    peak_rss_mb,
    read_text,
)
from actors.lab.signals import interruptible
from actors.lab.wgactors import launcher_argv

PREFIX = "wgb"  # namespaces wgb-TAG-a/b, interfaces and veths wgbTAG..., temp dir /tmp/wgb-TAG-*

PING_COUNT = 20
PING_INTERVAL = 0.05  # seconds (root may go below 0.2)
LOADED_RAMP = 1.0  # seconds of TCP upload before the loaded ping starts
LOADED_MIN_SECONDS = 3  # the upload under the loaded ping lasts at least this long
UDP_LEN = 64  # bytes of UDP payload
SETTLE = 0.3  # seconds between measurements, for queues to drain
WARMUP_TRIES = 5  # pings (2 s each at most) to get the handshake done before measuring
PROC_FIND_TIMEOUT = 5.0
STATUS_TIMEOUT = 10.0
PACKETS_PER = 1000  # context switches are counted per this many packets

QUICK_SECONDS, QUICK_ROUNDS = 1, 1


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One thing to measure each round: a tunnel flavour, or the plain link under it.

    ``wgactors_args`` None with ``tunnel`` set means wireguard-go on the a side too.
    """

    key: str
    label: str
    tunnel: bool = True
    wgactors_args: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # more environment for the wgactors end
    default: bool = True  # measured when --cases is not given

    @property
    def is_wgactors(self) -> bool:
        return self.tunnel and self.wgactors_args is not None


CASES: dict[str, Case] = {}


def register_case(case: Case) -> None:
    """Add a case; reports list cases in registration order."""
    CASES[case.key] = case


register_case(Case("veth", f"plain veth, no tunnel (MTU {MTU})", tunnel=False, aliases=("plain",)))
register_case(Case("reference", "wireguard-go ↔ wireguard-go", aliases=("ref",)))
register_case(Case("wgactors", "wgactors ↔ wireguard-go", wgactors_args=(), aliases=("actors",)))
register_case(
    Case(
        "wgactors-single",
        "wgactors --single-threaded ↔ wireguard-go",
        wgactors_args=("--single-threaded",),
        aliases=("single",),
    )
)
# The same two modes with their threads placed by the kernel (WGACTORS_CPUS=all) instead of
# on one CPU (the default, actors/placement.py): what placement is worth. Not in the default set.
for _key, _alias, _label, _args in (
    ("wgactors-spread", "actors-spread", "wgactors (WGACTORS_CPUS=all) ↔ wireguard-go", ()),
    (
        "wgactors-single-spread",
        "single-spread",
        "wgactors --single-threaded (WGACTORS_CPUS=all) ↔ wireguard-go",
        ("--single-threaded",),
    ),
):
    register_case(
        Case(
            _key,
            _label,
            wgactors_args=_args,
            aliases=(_alias,),
            env=(("WGACTORS_CPUS", "all"),),
            default=False,
        )
    )
WGACTORS_CASES = tuple(k for k, c in CASES.items() if c.is_wgactors)

# (key, label, format); "a end" is the process on namespace a's side of the tunnel.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("tcp_up_mbps", "TCP upload Mbit/s", "{:.1f}"),
    ("tcp_down_mbps", "TCP download Mbit/s", "{:.1f}"),
    ("tcp_sum_mbps", "TCP up+down Mbit/s", "{:.1f}"),
    ("udp_pps", f"UDP {UDP_LEN} B received pkt/s", "{:.0f}"),
    ("ping_idle_ms", "ping idle avg ms", "{:.3f}"),
    ("ping_loaded_ms", "ping under TCP upload avg ms", "{:.2f}"),
    ("rss_mb", "a end peak RSS MB", "{:.1f}"),
    ("cpu_pct", "a end CPU % of one core", "{:.0f}"),
    ("ctx_per_kpkt", f"a end context switches / {PACKETS_PER} pkt", "{:.0f}"),
)

TARGET_UPDOWN_RATIO = 1.0  # actors against wireguard-go, TCP up + down
TARGET_EACH_DIRECTION = 0.9  # actors against wireguard-go, upload and download each
TARGET_ACTORS_VS_SINGLE = 0.95
TARGET_RSS_MB = 80.0
TARGET_LATENCY_OVER_SINGLE_MS = 0.1  # actors' added idle latency over single-threaded's


# --------------------------------------------------------------------------- one case, once


@dataclass
class RunResult:
    case: str
    round: int
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, **self.metrics, **self.extra, "errors": self.errors}


@dataclass(frozen=True)
class Pinning:
    """CPU lists (taskset syntax) for the peer's side and for the side under test."""

    peer: str | None = None
    ours: str | None = None

    @classmethod
    def split(cls, cpus: Sequence[int]) -> Pinning:
        """The first half of ``cpus`` for the peer, the second half for us."""
        cpus = sorted(cpus)
        if len(cpus) < 2:
            raise LabError(f"--pin needs at least 2 usable CPUs, this process has {len(cpus)}")
        half = len(cpus) // 2
        return cls(",".join(str(c) for c in cpus[:half]), ",".join(str(c) for c in cpus[half:]))


@dataclass
class Setup:
    """Where a case's traffic goes and what is measured on the a side."""

    target: str  # the address in b that iperf3 and ping aim at
    dev_a: str  # a's interface whose packet counters count the case's packets
    tunnel: Tunnel | None = None
    pid: int | None = None  # the a end's process (tunnel cases)


@dataclass(frozen=True)
class Counters:
    """The a side's cumulative counters at one moment."""

    t: float
    cpu_s: float | None
    switches: dict[str, int] | None  # per thread name
    packets: int | None

    @classmethod
    def read(cls, lab: Lab, setup: Setup) -> Counters:
        pid = setup.pid
        return cls(
            time.monotonic(),
            None if pid is None else cpu_seconds(pid),
            None if pid is None else context_switches_by_thread(pid),
            link_packets(lab.ns_a, setup.dev_a),
        )


@dataclass
class Bench:
    """What every case run needs: the lab, its keys, the settings."""

    lab: Lab
    keys: Keys
    seconds: int
    pin: Pinning = field(default_factory=Pinning)

    def iperf3(self, name: str, target: str, seconds: int, *extra: Any, **kw: Any) -> Any:
        return iperf3(
            self.lab.a,
            self.lab.b,
            target,
            seconds,
            *extra,
            workdir=self.lab.tmp,
            name=name,
            client_cpus=self.pin.ours,
            server_cpus=self.pin.peer,
            **kw,
        )


def ping_avg(ns: Netns, target: str, count: int = PING_COUNT) -> tuple[float, float]:
    """Average rtt (ms) and loss (%) of ``count`` pings; LabError if none came back."""
    result = ping(ns, target, count, PING_INTERVAL)
    if result.rtt_avg_ms is None:
        raise LabError(f"ping {target}: {result.error}")
    return result.rtt_avg_ms, result.loss_pct or 0.0


def start_case(bench: Bench, case: Case, serial: int) -> Setup:
    """Start the case's tunnel ends (none for the plain link) and find the a end's process."""
    lab = bench.lab
    if not case.tunnel:
        return Setup(PLAIN_B, f"{lab.prefix}{lab.tag}pa")
    tunnel = lab.tunnel(
        serial,
        bench.keys,
        case.wgactors_args,
        verbose=False,
        a_cpus=bench.pin.ours,
        b_cpus=bench.pin.peer,
        a_env=dict(case.env),
    )
    setup = Setup(TUNNEL_B, tunnel.a_end.iface, tunnel)
    deadline = time.monotonic() + PROC_FIND_TIMEOUT
    while (pid := tunnel.a_pid()) is None:
        if not tunnel.a_alive() or time.monotonic() > deadline:
            raise LabError("cannot find the a end's process")
        time.sleep(0.05)
    setup.pid = pid
    return setup


def warm_up(bench: Bench, setup: Setup) -> None:
    """Pings until one comes back (the handshake), not measured."""
    for attempt in range(1, WARMUP_TRIES + 1):
        try:
            ping_avg(bench.lab.a, setup.target, count=1)
            return
        except LabError:
            alive = setup.tunnel is None or setup.tunnel.a_alive()
            if attempt == WARMUP_TRIES or not alive:
                raise LabError(f"no ping to {setup.target} (handshake?)") from None


def measure_idle_ping(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    rtt, loss = ping_avg(bench.lab.a, setup.target)
    result.metrics["ping_idle_ms"] = rtt
    result.extra["ping_idle_loss_pct"] = loss


def measure_tcp_up(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    report = bench.iperf3(f"tcp-up-{serial}", setup.target, bench.seconds)
    result.metrics["tcp_up_mbps"] = tcp_mbps(report)


def measure_tcp_down(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    report = bench.iperf3(f"tcp-down-{serial}", setup.target, bench.seconds, "-R")
    result.metrics["tcp_down_mbps"] = tcp_mbps(report)


def measure_loaded_ping(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    found: dict[str, Any] = {}

    def ping_meanwhile() -> None:
        time.sleep(LOADED_RAMP)
        try:
            found["ping"] = ping_avg(bench.lab.a, setup.target)
        except LabError as e:
            found["error"] = e

    up_seconds = max(bench.seconds, LOADED_MIN_SECONDS)
    report = bench.iperf3(f"loaded-{serial}", setup.target, up_seconds, during=ping_meanwhile)
    if "error" in found:
        raise found["error"]
    result.metrics["ping_loaded_ms"] = found["ping"][0]
    result.extra["ping_loaded_loss_pct"] = found["ping"][1]
    result.extra["loaded_tcp_up_mbps"] = tcp_mbps(report)


def measure_udp(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    extra = ("-u", "-l", UDP_LEN, "-b", 0)
    report = bench.iperf3(f"udp-{serial}", setup.target, bench.seconds, *extra)
    got, sent = udp_received_pps(report)
    result.metrics["udp_pps"] = got
    result.extra["udp_sent_pps"] = sent


Measurement = Callable[[Bench, Setup, RunResult, int], None]
MEASUREMENTS: tuple[tuple[str, Measurement], ...] = (
    ("ping idle", measure_idle_ping),
    ("TCP upload", measure_tcp_up),
    ("TCP download", measure_tcp_down),
    ("ping under load", measure_loaded_ping),
    ("UDP pps", measure_udp),
)


def measure(bench: Bench, setup: Setup, result: RunResult, serial: int) -> None:
    """Every measurement in turn; one that fails is recorded and the next one still runs."""
    for name, step in MEASUREMENTS:
        try:
            step(bench, setup, result, serial)
        except LabError as e:
            result.errors.append(f"{name}: {e}")
            if e.log is not None:
                result.extra.setdefault("log_tails", {})[e.log.name] = tail(e.log)
        time.sleep(SETTLE)


def record_counters(result: RunResult, setup: Setup, before: Counters, after: Counters) -> None:
    """CPU share, context switches per 1000 packets, peak RSS: from the two readings."""
    wall = after.t - before.t
    if before.cpu_s is not None and after.cpu_s is not None and wall > 0:
        result.metrics["cpu_pct"] = 100 * (after.cpu_s - before.cpu_s) / wall
        result.extra["cpu_s"], result.extra["wall_s"] = after.cpu_s - before.cpu_s, wall
    packets = None
    if before.packets is not None and after.packets is not None:
        packets = after.packets - before.packets
        result.extra["link_packets"] = packets
    if before.switches is not None and after.switches is not None:
        by_thread = {
            name: n - before.switches.get(name, 0) for name, n in sorted(after.switches.items())
        }
        switches = sum(by_thread.values())
        result.extra["context_switches"] = switches
        result.extra["context_switches_by_thread"] = by_thread
        if packets:
            result.metrics["ctx_per_kpkt"] = PACKETS_PER * switches / packets
    if setup.pid is not None:
        rss = peak_rss_mb(setup.pid)
        if rss is not None:
            result.metrics["rss_mb"] = rss
        else:
            result.errors.append(f"could not read VmHWM of PID {setup.pid}")


def record_tunnel(result: RunResult, setup: Setup) -> None:
    """What wireguard-go in b counted (the traffic did go through the tunnel), and wgactors's
    own per-stage counters."""
    tunnel = setup.tunnel
    if tunnel is None:
        return
    if not tunnel.a_alive():
        result.errors.append("the a end exited while measured")
    rx_tx = tunnel.b_end.transfer()
    if rx_tx is not None:
        result.extra["b_rx_bytes"], result.extra["b_tx_bytes"] = rx_tx
    if tunnel.is_wgactors:
        result.extra["status"] = wgactors_status(tunnel.a_end.iface)


def wgactors_status(iface: str) -> dict[str, Any] | None:
    """``wgactors status IFACE --json`` (per-stage counters), or None."""
    with contextlib.suppress(Exception):
        argv = [*launcher_argv(), "status", iface, "--json"]
        res = run(argv, timeout=STATUS_TIMEOUT, check=False)
        if res.returncode == 0:
            status: dict[str, Any] = json.loads(res.stdout)
            return status
    return None


def run_case(bench: Bench, case: Case, round_no: int, serial: int) -> RunResult:
    """Start the case, measure it, stop it; failures go into the result."""
    result = RunResult(case.key, round_no)
    setup: Setup | None = None
    try:
        setup = start_case(bench, case, serial)
        if setup.pid is not None:
            result.extra["pid"] = setup.pid
        warm_up(bench, setup)
        before = Counters.read(bench.lab, setup)
        measure(bench, setup, result, serial)
        record_counters(result, setup, before, Counters.read(bench.lab, setup))
        record_tunnel(result, setup)
        up, down = result.metrics.get("tcp_up_mbps"), result.metrics.get("tcp_down_mbps")
        if up is not None and down is not None:
            result.metrics["tcp_sum_mbps"] = up + down
    except LabError as e:
        result.errors.append(f"setting up: {e}")
    finally:
        stop_case(bench.lab, case, result, setup)
    return result


def stop_case(lab: Lab, case: Case, result: RunResult, setup: Setup | None) -> None:
    """Stop the tunnel ends (also those of a case that failed while starting)."""
    tunnel = setup.tunnel if setup is not None else None
    if tunnel is None and case.tunnel and lab.tunnels:
        tunnel = lab.tunnels[-1]
    if tunnel is None:
        return
    logs = tunnel.logs() if result.errors else {}
    status = lab.stop_tunnel(tunnel)
    if case.is_wgactors:
        result.extra["exit_status"] = status
        if status != 0:
            result.errors.append(f"wgactors exited with {status} on SIGTERM")
    for name, text in logs.items():
        result.extra.setdefault("log_tails", {})[name] = "\n".join(text.splitlines()[-30:])


# --------------------------------------------------------------------------- summary


def summarize(runs: Sequence[RunResult]) -> dict[str, dict[str, float]]:
    """{"median"|"min"|"max": {metric: value}} over the runs that have the metric."""
    out: dict[str, dict[str, float]] = {"median": {}, "min": {}, "max": {}}
    for key, _, _ in METRICS:
        values = [r.metrics[key] for r in runs if key in r.metrics]
        if values:
            out["median"][key] = statistics.median(values)
            out["min"][key] = min(values)
            out["max"][key] = max(values)
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def difference(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def compute_ratios(summary: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Each case against the reference and against the plain veth, from the medians."""
    med = {case: s["median"] for case, s in summary.items()}
    ref, veth = med.get("reference", {}), med.get("veth", {})
    out: dict[str, Any] = {}
    for case, m in med.items():
        if case == "veth":
            continue
        out[case] = {
            "up_vs_reference": ratio(m.get("tcp_up_mbps"), ref.get("tcp_up_mbps")),
            "down_vs_reference": ratio(m.get("tcp_down_mbps"), ref.get("tcp_down_mbps")),
            "updown_vs_reference": ratio(m.get("tcp_sum_mbps"), ref.get("tcp_sum_mbps")),
            "pps_vs_reference": ratio(m.get("udp_pps"), ref.get("udp_pps")),
            "added_idle_latency_ms": difference(m.get("ping_idle_ms"), ref.get("ping_idle_ms")),
            "updown_share_of_veth": ratio(m.get("tcp_sum_mbps"), veth.get("tcp_sum_mbps")),
            "pps_share_of_veth": ratio(m.get("udp_pps"), veth.get("udp_pps")),
            "latency_over_veth_ms": difference(m.get("ping_idle_ms"), veth.get("ping_idle_ms")),
            "peak_rss_mb": m.get("rss_mb"),
        }
    out["actors_vs_single_updown"] = ratio(
        med.get("wgactors", {}).get("tcp_sum_mbps"),
        med.get("wgactors-single", {}).get("tcp_sum_mbps"),
    )
    if "wgactors-spread" in med or "wgactors-single-spread" in med:
        out["actors_vs_single_updown_spread"] = ratio(
            med.get("wgactors-spread", {}).get("tcp_sum_mbps"),
            med.get("wgactors-single-spread", {}).get("tcp_sum_mbps"),
        )
    return out


def check_targets(
    ratios: dict[str, Any], summary: dict[str, dict[str, dict[str, float]]]
) -> list[dict[str, Any]]:
    actors = ratios.get("wgactors", {})
    single = ratios.get("wgactors-single", {})
    rss_values = [
        summary[c]["max"]["rss_mb"]
        for c in WGACTORS_CASES
        if c in summary and "rss_mb" in summary[c]["max"]
    ]
    up, down = actors.get("up_vs_reference"), actors.get("down_vs_reference")
    updown = actors.get("updown_vs_reference")
    both = None if None in (updown, up, down) else (updown, up, down)
    targets: list[tuple[str, Any, Callable[[Any], bool], Callable[[Any], str]]] = [
        (
            f"actors ≥ {TARGET_UPDOWN_RATIO:.1f}x wireguard-go up+down, "
            f"≥ {TARGET_EACH_DIRECTION:.1f}x each way",
            both,
            lambda v: v[0] >= TARGET_UPDOWN_RATIO and min(v[1:]) >= TARGET_EACH_DIRECTION,
            lambda v: f"{v[0]:.2f}x (up {v[1]:.2f}x, down {v[2]:.2f}x)",
        ),
        (
            f"actors ≥ {TARGET_ACTORS_VS_SINGLE:g}x single-threaded (up+down)",
            ratios.get("actors_vs_single_updown"),
            lambda v: v >= TARGET_ACTORS_VS_SINGLE,
            lambda v: f"{v:.2f}x",
        ),
        (
            f"actors' added idle latency ≤ single-threaded's"
            f" + {TARGET_LATENCY_OVER_SINGLE_MS:g} ms",
            difference(actors.get("added_idle_latency_ms"), single.get("added_idle_latency_ms")),
            lambda v: v <= TARGET_LATENCY_OVER_SINGLE_MS,
            lambda v: (
                f"{v:+.3f} ms (actors {actors['added_idle_latency_ms']:+.3f}, "
                f"single {single['added_idle_latency_ms']:+.3f})"
            ),
        ),
        (
            f"peak RSS ≤ {TARGET_RSS_MB:g} MB (highest of any round, both wgactors modes)",
            max(rss_values) if rss_values else None,
            lambda v: v <= TARGET_RSS_MB,
            lambda v: f"{v:.1f} MB",
        ),
    ]
    out = []
    for name, value, ok, shown in targets:
        status = "SKIP" if value is None else ("PASS" if ok(value) else "MISS")
        text = "not measured" if value is None else shown(value)
        plain = value[0] if isinstance(value, tuple) else value
        out.append({"target": name, "value": plain, "status": status, "shown": text})
    return out


# --------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


RATIO_ROWS = (
    ("up_vs_reference", "TCP upload / reference", "{:.2f}x"),
    ("down_vs_reference", "TCP download / reference", "{:.2f}x"),
    ("updown_vs_reference", "TCP up+down / reference", "{:.2f}x"),
    ("pps_vs_reference", "UDP pkt/s / reference", "{:.2f}x"),
    ("added_idle_latency_ms", "idle latency added over reference", "{:+.3f} ms"),
    ("updown_share_of_veth", "TCP up+down, share of plain veth", "{:.0%}"),
    ("pps_share_of_veth", "UDP pkt/s, share of plain veth", "{:.0%}"),
    ("latency_over_veth_ms", "idle latency added over plain veth", "{:+.3f} ms"),
    ("peak_rss_mb", "peak RSS", "{:.1f} MB"),
)


def print_medians(cases: Sequence[str], summary: dict[str, dict[str, dict[str, float]]]) -> None:
    rows: list[list[str]] = [["", *cases]]
    for key, label, spec in METRICS:
        s = [summary[c] for c in cases]
        rows.append([label, *(fmt(x["median"].get(key), spec) for x in s)])
        rows.append(
            [
                "",
                *(
                    f"[{fmt(x['min'].get(key), spec)} .. {fmt(x['max'].get(key), spec)}]"
                    if key in x["min"]
                    else ""
                    for x in s
                ),
            ]
        )
    print_rows(rows)


def print_ratios(ratios: dict[str, Any]) -> None:
    cases = [c for c in CASES if c in ratios]
    if not cases:
        return
    print("\nRatios (from the medians above)")
    rows = [["", *cases]]
    for key, label, spec in RATIO_ROWS:
        rows.append([label, *(fmt(ratios[c].get(key), spec) for c in cases)])
    print_rows(rows)
    print(
        "actors / single-threaded (TCP up+down): "
        + fmt(ratios.get("actors_vs_single_updown"), "{:.2f}x")
    )
    if "actors_vs_single_updown_spread" in ratios:
        print(
            "actors / single-threaded, both placed by the kernel (TCP up+down): "
            + fmt(ratios.get("actors_vs_single_updown_spread"), "{:.2f}x")
        )


def print_report(
    cases: Sequence[str],
    summary: dict[str, dict[str, dict[str, float]]],
    ratios: dict[str, Any],
    targets: list[dict[str, Any]],
    rounds: int,
    seconds: int,
    pin: Pinning,
) -> None:
    print(f"\nMedian of {rounds} round(s) per case, [min .. max] below it")
    print_medians(cases, summary)
    print_ratios(ratios)
    notes = [
        f"a → b over the tunnel ({TUNNEL_B}) or the plain veth ({PLAIN_A} → {PLAIN_B});",
        f"iperf3 TCP {seconds} s per direction, UDP upload -l {UDP_LEN} -b 0 for {seconds} s;",
        f"ping -c {PING_COUNT} -i {PING_INTERVAL} a→b, idle and {LOADED_RAMP:g} s into a "
        f"≥{LOADED_MIN_SECONDS} s TCP upload;",
        "RSS = VmHWM, CPU = utime+stime of the a end's process over its measurements' wall time;",
        "context switches = voluntary + involuntary of all its threads, "
        f"per {PACKETS_PER} packets in and out of its interface",
    ]
    if pin.ours:
        notes[-1] += ";"
        notes.append(f"pinned: peer side on CPUs {pin.peer}, side under test on CPUs {pin.ours}")
    print("\n(" + "\n ".join(notes) + ")")
    print("\nTargets")
    for t in targets:
        print(f"  {t['status']:4}  {t['target']}: {t['shown']}")


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    cpuinfo = read_text("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)

    def first_line(*argv: str) -> str:
        with contextlib.suppress(Exception):
            res = run(argv, timeout=5, check=False)
            lines = (res.stdout or res.stderr).strip().splitlines()
            return lines[0] if lines else "?"
        return "?"

    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": m.group(1).strip() if m else platform.processor() or "?",
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "wireguard_go": first_line("wireguard-go", "--version"),
        "iperf3": first_line("iperf3", "--version"),
        "loadavg": os.getloadavg(),
    }


def print_machine(info: dict[str, Any]) -> None:
    load = " ".join(f"{x:.2f}" for x in info["loadavg"])
    print(f"machine: nproc {info['nproc']} (usable {info['usable_cpus']}), {info['cpu_model']}")
    print(f"         kernel {info['kernel']}, {info['python']}, {info['wireguard_go']}")
    print(f"         {info['iperf3']}; load average at start {load}", flush=True)


# --------------------------------------------------------------------------- main


def parse_cases(text: str) -> list[str]:
    aliases = {alias: key for key, case in CASES.items() for alias in case.aliases}
    chosen: list[str] = []
    for word in text.replace(",", " ").split():
        key = aliases.get(word, word)
        if key not in CASES:
            names = ", ".join([*CASES, *aliases])
            raise argparse.ArgumentTypeError(f"unknown case {word!r} (one of {names})")
        if key not in chosen:
            chosen.append(key)
    if not chosen:
        raise argparse.ArgumentTypeError("no case given")
    return [k for k in CASES if k in chosen]  # always in the canonical order


def parse_peers(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("peers must be numbers, e.g. 1000,10000") from None
    if not sizes or not all(1 <= n <= 131_072 for n in sizes):
        raise argparse.ArgumentTypeError("peers must be 1..131072")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark wgactors against wireguard-go in network namespaces.",
    )
    parser.add_argument(
        "--seconds", type=int, default=5, metavar="N", help="iperf3 seconds per run (5)"
    )
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds (3)")
    names = ", ".join(
        f"{key} ({', '.join(case.aliases)})" if case.aliases else key for key, case in CASES.items()
    )
    parser.add_argument(
        "--cases",
        type=parse_cases,
        default=[k for k, c in CASES.items() if c.default],
        metavar="LIST",
        help=f"comma-separated subset of: {names}; default all but the spread ones",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="peer side (wireguard-go in b, iperf3 server) on one half of the CPUs, the side "
        "under test (and the iperf3 client) on the other half",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ROUNDS} round, {QUICK_SECONDS} s each"
    )
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    parser.add_argument(
        "--core",
        action="store_true",
        help="also time the protocol core in process, per packet, next to the bare AEAD",
    )
    parser.add_argument("--core-only", action="store_true", help="only the --core measurement")
    parser.add_argument(
        "--peers",
        type=parse_peers,
        metavar="N[,N...]",
        help="instead: wgactors as a hub with N peers (e.g. 1000,10000,100000; see bench_hub.py)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = QUICK_SECONDS, QUICK_ROUNDS
    if not 1 <= args.seconds <= 600:
        parser.error("--seconds must be 1..600")
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be 1..100")
    return args


def run_rounds(bench: Bench, cases: Sequence[str], rounds: int) -> dict[str, list[RunResult]]:
    """Every case once per round, round-robin, printing each run's figures as it ends."""
    runs: dict[str, list[RunResult]] = {c: [] for c in cases}
    serial = 0
    for round_no in range(1, rounds + 1):
        for key in cases:
            serial += 1
            print(f"bench: round {round_no}/{rounds}: {CASES[key].label} ...", flush=True)
            r = run_case(bench, CASES[key], round_no, serial)
            runs[key].append(r)
            shown = ", ".join(
                f"{metric} {spec.format(r.metrics[metric])}"
                for metric, _, spec in METRICS
                if metric in r.metrics and metric != "tcp_sum_mbps"
            )
            print(f"         {shown or 'no figures'}", flush=True)
            for e in r.errors:
                print(f"         FAILED: {e}", flush=True)
    return runs


def json_report(
    args: argparse.Namespace,
    bench: Bench,
    info: dict[str, Any],
    runs: dict[str, list[RunResult]],
    summary: dict[str, Any],
    ratios: dict[str, Any],
    targets: list[dict[str, Any]],
    errors: list[str],
) -> dict[str, Any]:
    return {
        "ok": not errors,
        "statistic": "median",
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "quick": args.quick,
            "cases": args.cases,
            "pin": {"peer": bench.pin.peer, "ours": bench.pin.ours} if bench.pin.ours else None,
            "ping_count": PING_COUNT,
            "ping_interval_s": PING_INTERVAL,
            "udp_len": UDP_LEN,
            "mtu": MTU,
        },
        "machine": info,
        "namespaces": [bench.lab.ns_a, bench.lab.ns_b],
        "cases": {
            c: {"label": CASES[c].label, "rounds": [r.to_json() for r in runs[c]], **summary[c]}
            for c in args.cases
        },
        "ratios": ratios,
        "targets": targets,
        "errors": errors,
    }


def print_log_tails(runs: dict[str, list[RunResult]]) -> None:
    for case, case_runs in runs.items():
        for r in case_runs:
            for name, text in r.extra.get("log_tails", {}).items():
                print(f"\nlast lines of {name} (round {r.round}, {case}):")
                for line in (text or "(empty)").splitlines():
                    print(f"    {line}")


def bench_main(
    args: argparse.Namespace, lab: Lab, info: dict[str, Any], core: corebench.CoreCost | None
) -> int:
    started = time.monotonic()
    print(f"bench: namespaces {lab.ns_a} and {lab.ns_b}, temp dir {lab.tmp}", flush=True)
    pin = Pinning.split(list(os.sched_getaffinity(0))) if args.pin else Pinning()
    lab.create()
    if args.peers:
        return _hub(lab, args, started)
    bench = Bench(lab, Keys.fresh(), args.seconds, pin)
    runs = run_rounds(bench, args.cases, args.rounds)
    errors = [
        f"round {r.round}, {case}: {e}" for case in args.cases for r in runs[case] for e in r.errors
    ]
    summary = {c: summarize(runs[c]) for c in args.cases}
    ratios = compute_ratios(summary)
    targets = check_targets(ratios, summary)
    print_report(args.cases, summary, ratios, targets, args.rounds, args.seconds, pin)
    if args.json:
        report = json_report(args, bench, info, runs, summary, ratios, targets, errors)
        report["core"] = core.as_dict() if core is not None else None
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_log_tails(runs)
    verdict = "all measurements worked" if not errors else f"{len(errors)} measurement(s) failed"
    print(f"\nbench: {verdict} ({time.monotonic() - started:.0f} s)")
    return 0 if not errors else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    core = None
    if args.core or args.core_only:
        # First, while the machine is quiet: in process, no namespaces, no root needed.
        core = corebench.measure()
        corebench.print_core(core)
        if args.core_only:
            if args.json:
                Path(args.json).write_text(json.dumps({"core": core.as_dict()}, indent=2) + "\n")
            return 0
    reason = preflight("bench")
    if reason:
        print(f"bench: {reason}", file=sys.stderr)
        return 1
    info = machine_info()
    print_machine(info)
    lab = Lab(prefix=PREFIX)
    try:
        with interruptible():  # on the way out the signals are ignored: clean-up runs whole
            return bench_main(args, lab, info, core)
    except KeyboardInterrupt as e:
        print(f"\nbench: interrupted ({e or 'SIGINT'}); cleaning up", file=sys.stderr)
        return 130
    except LabError as e:
        print(f"\nbench: {e}", file=sys.stderr)
        if e.log is not None:
            print(tail(e.log), file=sys.stderr)
        return 1
    finally:
        lab.close()


def _hub(lab: Lab, args: argparse.Namespace, started: float) -> int:
    import bench_hub  # scripts/bench_hub.py: the --peers case

    results, errors = bench_hub.main_hub(lab, args.peers, args.seconds)
    print()
    bench_hub.print_hub_report(results)
    if args.json:
        report = {"ok": not errors, "hub": bench_hub.to_json(results), "errors": errors}
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    verdict = "all measurements worked" if not errors else f"{len(errors)} failed"
    print(f"\nbench: {verdict} ({time.monotonic() - started:.0f} s)")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
