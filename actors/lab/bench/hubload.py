"""`scripts/bench --hub-load K`: wgactors as a hub of K live peers, each direction loaded by
:mod:`actors.lab.loadgen`, at one or more worker counts (``--workers``), in interleaved rounds.

Every round starts each case afresh: a daemon (``wgactors up`` in namespace a, K peers, with
``--workers N`` only when the case has one), K fresh handshakes from namespace b, then the
datagrams encrypted ahead; then the inbound load (b -> daemon -> a's host) and the outbound
load (a's host -> daemon -> b), each bounded by the packets encrypted ahead and by
``--seconds``. Around each load the daemon's CPU time and context switches are read: the
parent process's, and each child process's (the workers) apart. Delivered packets come from
the kernel's counters (the daemon's TUN rx; the UDP datagrams that reached b's sockets). CPU
time is each thread's run time from ``schedstat`` (exact to the nanosecond, where utime +
stime moves in clock ticks).
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..command import LabError, tail
from ..keys import gen_keypair
from ..loadgen import (
    DAEMON_ADDRESS,
    OUT_PORT,
    HubPeers,
    NetCounters,
    PhaseResult,
    hub_conf,
    outbound_bursts,
    run_phase,
)
from ..netns import socket_in
from ..pair import UNDERLAY_A, UNDERLAY_B, WG_PORT, Lab
from ..procfs import (
    context_switches,
    cpu_seconds,
    descendants,
    find_process,
    is_wgactors_python,
    read_text,
    run_seconds,
)
from ..table import print_rows
from ..wgactors import Wgactors
from . import stats
from .measure import RunResult
from .report import print_log_tails

PROC_FIND_TIMEOUT = 5.0  # seconds for the daemon's process to appear under its launcher
IFACE_GONE_TIMEOUT = 3.0
DEFAULT_CASE = "wgactors"  # the daemon as the tree runs it by default (no --workers flag)
WORKERS_PREFIX = "wgactors-w"
TARGET_SPEEDUP = 1.5  # 2 workers over 1, delivered packets/s, each direction
TARGET_CPU_PER_PACKET = 1.10  # 2 workers' CPU per packet over 1 worker's, at most

DIRECTIONS = (("in", "inbound (b → daemon → a's host)"), ("out", "outbound (a's host → b)"))
# (key, label, format), per direction (the key without its "in_"/"out_" prefix).
PHASE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("pps", "delivered pkt/s", "{:.0f}"),
    ("mbps", "delivered Mbit/s (inner bytes)", "{:.1f}"),
    ("cpu_pct", "daemon CPU % of one core (all)", "{:.0f}"),
    ("parent_cpu_pct", "  parent process", "{:.0f}"),
    ("workers_cpu_pct", "  child processes (workers), sum", "{:.0f}"),
    ("cpu_us_per_pkt", "daemon CPU µs / packet", "{:.1f}"),
    ("ctx_per_kpkt", "daemon context switches / 1000 pkt", "{:.0f}"),
    ("gen_us_per_pkt", "generator CPU µs / packet sent", "{:.2f}"),
    ("loss_pct", "sent but not delivered %", "{:.1f}"),
)
METRIC_KEYS = tuple(f"{d}_{k}" for d, _ in DIRECTIONS for k, _, _ in PHASE_METRICS)


@dataclass(frozen=True)
class HubLoad:
    """What one ``--hub-load`` run measures."""

    peers: int
    per_peer: int
    size: int
    seconds: int
    rounds: int
    workers: tuple[str | None, ...] = (None,)  # None: no --workers flag
    daemon_cpus: str | None = None  # --pin: the daemon's CPUs (taskset), the generator's
    generator_cpus: str | None = None

    def key(self, workers: str | None) -> str:
        return DEFAULT_CASE if workers is None else f"{WORKERS_PREFIX}{workers}"

    @property
    def cases(self) -> list[str]:
        return [self.key(w) for w in self.workers]


@dataclass(frozen=True)
class ProcSnapshot:
    """The daemon's CPU seconds and context switches at one moment: its own process's, and
    each of its descendant processes' (the workers) by PID."""

    t: float
    parent: tuple[float, int]
    children: dict[int, tuple[float, int]] = field(default_factory=dict)

    @classmethod
    def read(cls, pid: int) -> ProcSnapshot:
        def one(p: int) -> tuple[float, int]:
            cpu = run_seconds(p)
            return cpu if cpu is not None else cpu_seconds(p) or 0.0, context_switches(p) or 0

        kids = {c: one(c) for c in descendants(pid)}
        return cls(time.monotonic(), one(pid), kids)


def record_phase(
    result: RunResult,
    prefix: str,
    phase: PhaseResult,
    before: ProcSnapshot,
    after: ProcSnapshot,
    size: int,
) -> None:
    """The figures of one direction, from the load's counts and the two snapshots."""
    m, x = result.metrics, result.extra
    wall = after.t - before.t
    parent_cpu = after.parent[0] - before.parent[0]
    worker_cpu = {
        pid: cpu - before.children.get(pid, (0.0, 0))[0] for pid, (cpu, _) in after.children.items()
    }
    switches = after.parent[1] - before.parent[1]
    switches += sum(
        n - before.children.get(pid, (0.0, 0))[1] for pid, (_, n) in after.children.items()
    )
    total_cpu = parent_cpu + sum(worker_cpu.values())
    m[f"{prefix}_pps"] = phase.pps
    m[f"{prefix}_mbps"] = phase.pps * size * 8 / 1e6
    if wall > 0:
        m[f"{prefix}_cpu_pct"] = 100 * total_cpu / wall
        m[f"{prefix}_parent_cpu_pct"] = 100 * parent_cpu / wall
        m[f"{prefix}_workers_cpu_pct"] = 100 * sum(worker_cpu.values()) / wall
        x[f"{prefix}_worker_cpu_pct"] = {
            f"{p} {(read_text(f'/proc/{p}/comm') or '?').strip()}": 100 * c / wall
            for p, c in worker_cpu.items()
        }
    if phase.delivered:
        m[f"{prefix}_cpu_us_per_pkt"] = 1e6 * total_cpu / phase.delivered
        m[f"{prefix}_ctx_per_kpkt"] = 1000 * switches / phase.delivered
    if phase.sent:
        m[f"{prefix}_gen_us_per_pkt"] = 1e6 * phase.generator_cpu_s / phase.sent
        m[f"{prefix}_loss_pct"] = 100 * max(phase.sent - phase.delivered, 0) / phase.sent
    x[f"{prefix}_workers"] = len(after.children)
    x[f"{prefix}_context_switches"] = switches
    x[f"{prefix}_load"] = {
        "sent": phase.sent,
        "delivered": phase.delivered,
        "dropped_seen": phase.dropped_seen,
        "written_off": phase.written_off,
        "send_errors": phase.send_errors,
        "seconds": phase.seconds,
        "generator_cpu_s": phase.generator_cpu_s,
        "timed_out": phase.timed_out,
    }


def udp_arrived(counters: NetCounters) -> int:
    """UDP datagrams that reached a socket in the namespace, taken or dropped for a full
    receive buffer: each datagram once, also when it crossed the veth inside a GSO packet."""
    udp = counters.udp()
    return udp.get("InDatagrams", 0) + udp.get("RcvbufErrors", 0)


def _find_pid(daemon: Wgactors) -> int:
    assert daemon.proc is not None
    deadline = time.monotonic() + PROC_FIND_TIMEOUT
    while (pid := find_process(daemon.proc.pid, is_wgactors_python)) is None:
        if daemon.proc.poll() is not None or time.monotonic() > deadline:
            raise LabError("cannot find the daemon's process", daemon.log_path)
        time.sleep(0.05)
    return pid


def run_case(lab: Lab, load: HubLoad, workers: str | None, round_no: int, serial: int) -> RunResult:
    """One daemon, K handshakes, inbound then outbound load; failures go into the result."""
    result = RunResult(load.key(workers), round_no)
    iface = f"{lab.prefix}{lab.tag}{serial}l"
    private, public = gen_keypair()
    daemon: Wgactors | None = None
    counters: list[NetCounters] = []
    out_sock: socket.socket | None = None
    try:
        with HubPeers(lab.b, load.peers, UNDERLAY_B, (UNDERLAY_A, WG_PORT)) as peers:
            conf = hub_conf(lab.tmp, iface, private, WG_PORT, peers.publics)
            args = () if workers is None else ("--workers", workers)
            daemon = Wgactors(
                lab.a,
                conf,
                *args,
                verbose=False,
                log_dir=lab.tmp,
                plain=True,
                cpus=load.daemon_cpus,
            )
            daemon.start()
            pid = _find_pid(daemon)
            result.extra["pid"] = pid
            result.extra["handshake_s"] = peers.handshake(base64.b64decode(public))
            result.extra["encrypted_ahead"] = peers.encrypt_ahead(load.per_peer, load.size)
            in_a, in_b = NetCounters(lab.a), NetCounters(lab.b)
            counters += [in_a, in_b]

            before = ProcSnapshot.read(pid)
            inbound = run_phase(
                peers.bursts(),
                lambda: in_a.link(iface)["rx_packets"],
                lambda: in_a.udp().get("RcvbufErrors", 0),
                load.seconds,
            )
            middle = ProcSnapshot.read(pid)
            record_phase(result, "in", inbound, before, middle, load.size)

            out_sock = socket_in(lab.a, socket.AF_INET)
            out_sock.bind((DAEMON_ADDRESS, OUT_PORT))
            out_sock.setblocking(False)
            bursts = outbound_bursts(out_sock, load.peers, load.per_peer, load.size)
            middle = ProcSnapshot.read(pid)
            outbound = run_phase(
                bursts,
                lambda: udp_arrived(in_b),
                lambda: in_a.link(iface)["tx_dropped"],
                load.seconds,
            )
            after = ProcSnapshot.read(pid)
            record_phase(result, "out", outbound, middle, after, load.size)
            if daemon.proc is not None and daemon.proc.poll() is not None:
                result.errors.append("the daemon exited while measured")
    except (LabError, OSError) as e:
        result.errors.append(f"{type(e).__name__}: {e}")
        if isinstance(e, LabError) and e.log is not None:
            result.extra.setdefault("log_tails", {})[e.log.name] = tail(e.log)
    finally:
        if out_sock is not None:
            out_sock.close()
        for c in counters:
            c.close()
        if daemon is not None:
            status = daemon.stop()
            result.extra["exit_status"] = status
            if status != 0:
                result.errors.append(f"wgactors exited with {status} on SIGTERM")
                result.extra.setdefault("log_tails", {})[daemon.log_path.name] = tail(
                    daemon.log_path
                )
            lab.a.wait_link_gone(iface, IFACE_GONE_TIMEOUT)
    return result


def run_rounds(lab: Lab, load: HubLoad) -> dict[str, list[RunResult]]:
    """Every case once per round, round-robin, printing each run's figures as it ends."""
    if load.generator_cpus:
        cpus = {int(c) for c in load.generator_cpus.split(",")}
        os.sched_setaffinity(threading.get_native_id(), cpus)  # this thread sends the load
    runs: dict[str, list[RunResult]] = {k: [] for k in load.cases}
    serial = 0
    for round_no in range(1, load.rounds + 1):
        for workers in load.workers:
            serial += 1
            key = load.key(workers)
            print(f"bench: round {round_no}/{load.rounds}: hub load, {key} ...", flush=True)
            r = run_case(lab, load, workers, round_no, serial)
            runs[key].append(r)
            m = r.metrics
            for d, _ in DIRECTIONS:
                if f"{d}_pps" in m:
                    print(
                        f"         {d}: {m[f'{d}_pps']:.0f} pkt/s, {per_process(r, d)}", flush=True
                    )
            if not m:
                print("         no figures", flush=True)
            for e in r.errors:
                print(f"         FAILED: {e}", flush=True)
    return runs


def per_process(run: RunResult, direction: str) -> str:
    """The daemon's CPU in one direction of one run: the parent's, then each child's."""
    m = run.metrics
    parent = m.get(f"{direction}_parent_cpu_pct")
    if parent is None:
        return "CPU not measured"
    each = run.extra.get(f"{direction}_worker_cpu_pct", {})
    kids = " + ".join(f"{v:.0f}" for _, v in sorted(each.items()))
    return f"CPU % parent {parent:.0f}" + (f", child processes {kids}" if kids else "")


def summarize(runs: Sequence[RunResult]) -> dict[str, dict[str, float]]:
    """{"median"|"min"|"max": {metric: value}} over the rounds that have the metric."""
    return stats.summarize(runs, METRIC_KEYS)


_ratio = stats.ratio


def compare(summary: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Each case over the first (medians): packets/s each way and CPU per packet."""
    cases = list(summary)
    if len(cases) < 2:
        return {}
    first = summary[cases[0]]["median"]
    out: dict[str, dict[str, Any]] = {}
    for case in cases[1:]:
        med = summary[case]["median"]
        out[case] = {
            f"{d}_{k}": _ratio(med.get(f"{d}_{k}"), first.get(f"{d}_{k}"))
            for d, _ in DIRECTIONS
            for k in ("pps", "cpu_us_per_pkt")
        }
    return out


def check_targets(summary: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """The issue's hub targets, when both ``--workers 1`` and ``--workers 2`` ran."""
    one, two = summary.get(f"{WORKERS_PREFIX}1"), summary.get(f"{WORKERS_PREFIX}2")
    if one is None or two is None:
        return []
    out = []
    for d, _ in DIRECTIONS:
        speedup = _ratio(two["median"].get(f"{d}_pps"), one["median"].get(f"{d}_pps"))
        cost = _ratio(
            two["median"].get(f"{d}_cpu_us_per_pkt"), one["median"].get(f"{d}_cpu_us_per_pkt")
        )
        for name, value, ok in (
            (f"{d}: 2 workers ≥ {TARGET_SPEEDUP}x 1 worker, pkt/s", speedup, TARGET_SPEEDUP),
            (f"{d}: 2 workers' CPU/packet ≤ {TARGET_CPU_PER_PACKET}x 1 worker's", cost, None),
        ):
            if value is None:
                status = "SKIP"
            elif ok is not None:
                status = "PASS" if value >= ok else "MISS"
            else:
                status = "PASS" if value <= TARGET_CPU_PER_PACKET else "MISS"
            shown = "not measured" if value is None else f"{value:.2f}x"
            out.append({"target": name, "value": value, "status": status, "shown": shown})
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def print_report(
    load: HubLoad,
    runs: dict[str, list[RunResult]],
    summary: dict[str, dict[str, dict[str, float]]],
    comparison: dict[str, dict[str, Any]],
    targets: list[dict[str, Any]],
) -> None:
    cases = list(summary)
    print(
        f"\nHub load: {load.peers} peers, {load.size}-byte inner packets, "
        f"{load.per_peer} datagrams per peer and direction (at most {load.seconds} s); "
        f"median of {load.rounds} round(s), [min .. max] below it"
    )
    rows: list[list[str]] = [["", *cases]]
    for d, title in DIRECTIONS:
        rows.append([title, *([""] * len(cases))])
        for key, label, spec in PHASE_METRICS:
            k = f"{d}_{key}"
            s = [summary[c] for c in cases]
            rows.append([f"  {label}", *(_fmt(x["median"].get(k), spec) for x in s)])
            rows.append(
                [
                    "",
                    *(
                        f"[{_fmt(x['min'].get(k), spec)} .. {_fmt(x['max'].get(k), spec)}]"
                        if k in x["min"]
                        else ""
                        for x in s
                    ),
                ]
            )
    print_rows(rows)
    if comparison:
        print(f"\nOver {cases[0]} (medians)")
        rows = [["", *comparison]]
        for d, _ in DIRECTIONS:
            for k, label in (("pps", "pkt/s"), ("cpu_us_per_pkt", "CPU / packet")):
                rows.append(
                    [
                        f"{d} {label}",
                        *(_fmt(comparison[c][f"{d}_{k}"], "{:.2f}x") for c in comparison),
                    ]
                )
        print_rows(rows)
    print(
        "\n(delivered: inbound = rx packets of the daemon's TUN interface, outbound = UDP"
        "\n datagrams that reached b's sockets; Mbit/s of inner IP bytes; CPU = run time of"
        "\n the daemon's threads, its own and each child process's, over the load's wall time;"
        "\n the generator's CPU is its sending thread's, the kernel's work on the way included)"
    )
    print("\nCPU % of one core, by round: the parent process, then each child process")
    for case in cases:
        for r in runs[case]:
            shown = "; ".join(f"{d} {per_process(r, d)}" for d, _ in DIRECTIONS)
            print(f"  {case}, round {r.round}: {shown}")
    if targets:
        print("\nTargets")
        for t in targets:
            print(f"  {t['status']:4}  {t['target']}: {t['shown']}")


def to_json(
    load: HubLoad,
    runs: dict[str, list[RunResult]],
    summary: dict[str, dict[str, dict[str, float]]],
    comparison: dict[str, dict[str, Any]],
    targets: list[dict[str, Any]],
    errors: list[str],
) -> dict[str, Any]:
    return {
        "ok": not errors,
        "statistic": "median",
        "hub_load": {
            "peers": load.peers,
            "per_peer": load.per_peer,
            "size": load.size,
            "seconds": load.seconds,
            "rounds": load.rounds,
            "workers": list(load.workers),
        },
        "cases": {c: {"rounds": [r.to_json() for r in runs[c]], **summary[c]} for c in load.cases},
        "over_first": comparison,
        "targets": targets,
        "errors": errors,
    }


def main_hubload(lab: Lab, load: HubLoad) -> tuple[dict[str, Any], list[str]]:
    """Every round of every case; the JSON report and the errors. Prints the report."""
    runs = run_rounds(lab, load)
    errors = [f"round {r.round}, {c}: {e}" for c in load.cases for r in runs[c] for e in r.errors]
    summary = {c: summarize(runs[c]) for c in load.cases}
    comparison = compare(summary)
    targets = check_targets(summary)
    print_report(load, runs, summary, comparison, targets)
    print_log_tails(runs)
    return to_json(load, runs, summary, comparison, targets, errors), errors
