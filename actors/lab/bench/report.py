"""What the bench prints and writes: the median table, the ratios, the targets, the baseline
comparison, the machine it ran on, and the JSON report.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
from collections.abc import Sequence
from typing import Any

from ..command import run
from ..pair import MTU, PLAIN_A, PLAIN_B, TUNNEL_B
from ..procfs import read_text
from ..table import print_rows
from ..wireguard_go import DEFAULT_BINARY
from .cases import CASES
from .measure import (
    LOADED_MIN_SECONDS,
    LOADED_RAMP,
    METRICS,
    PACKETS_PER,
    PING_COUNT,
    PING_INTERVAL,
    UDP_LEN,
    Bench,
    Pinning,
    RunResult,
)


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
    workers = ratios.get("workers_vs_first", {})
    for case, row in workers.get("cases", {}).items():
        first = workers["first"]
        print(
            f"{case} / {first}: TCP up+down {fmt(row['updown'], '{:.2f}x')}, "
            f"retransmissions {fmt(row['retrans'], '{:.2f}x')}"
        )
    if "actors_vs_single_updown_spread" in ratios:
        print(
            "actors / single-threaded, both placed by the kernel (TCP up+down): "
            + fmt(ratios.get("actors_vs_single_updown_spread"), "{:.2f}x")
        )


def print_baseline(comparison: dict[str, dict[str, dict[str, Any]]]) -> None:
    """This tree's medians over the baseline checkout's, case by case; ``worse`` marks a median
    beyond the baseline's [min .. max] on the bad side."""
    cases = [c for c in CASES if c in comparison]
    print("\nThis tree / the baseline checkout (medians; worse = beyond the baseline's range)")
    rows = [["", *cases]]
    for key, label, _ in METRICS:
        cells = []
        for case in cases:
            row = comparison[case].get(key)
            if row is None:
                cells.append("-")
            else:
                cells.append(fmt(row["ratio"], "{:.2f}x") + (" worse" if row["worse"] else ""))
        rows.append([label, *cells])
    print_rows(rows)


def print_report(
    cases: Sequence[str],
    summary: dict[str, dict[str, dict[str, float]]],
    ratios: dict[str, Any],
    targets: list[dict[str, Any]],
    rounds: int,
    seconds: int,
    pin: Pinning,
    comparison: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> None:
    print(f"\nMedian of {rounds} round(s) per case, [min .. max] below it")
    print_medians(cases, summary)
    print_ratios(ratios)
    if comparison:
        print_baseline(comparison)
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


def machine_info(wireguard_go: str = DEFAULT_BINARY) -> dict[str, Any]:
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
        "wireguard_go": first_line(wireguard_go, "--version"),
        "wireguard_go_binary": wireguard_go,
        "iperf3": first_line("iperf3", "--version"),
        "loadavg": os.getloadavg(),
    }


def print_machine(info: dict[str, Any]) -> None:
    load = " ".join(f"{x:.2f}" for x in info["loadavg"])
    print(f"machine: nproc {info['nproc']} (usable {info['usable_cpus']}), {info['cpu_model']}")
    print(f"         kernel {info['kernel']}, {info['python']}, {info['wireguard_go']}")
    print(f"         {info['iperf3']}; load average at start {load}", flush=True)


def json_report(
    args: argparse.Namespace,
    bench: Bench,
    info: dict[str, Any],
    runs: dict[str, list[RunResult]],
    summary: dict[str, Any],
    ratios: dict[str, Any],
    targets: list[dict[str, Any]],
    errors: list[str],
    comparison: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
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
    if bench.baseline is not None:
        report["baseline"] = {"checkout": str(bench.baseline), "comparison": comparison}
    return report


def print_log_tails(runs: dict[str, list[RunResult]]) -> None:
    for case, case_runs in runs.items():
        for r in case_runs:
            for name, text in r.extra.get("log_tails", {}).items():
                print(f"\nlast lines of {name} (round {r.round}, {case}):")
                for line in (text or "(empty)").splitlines():
                    print(f"    {line}")
