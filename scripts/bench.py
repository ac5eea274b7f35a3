"""Side-by-side benchmark: wgactors against the reference wireguard-go, in network namespaces.

Run through ``sudo scripts/bench`` (which first runs ``scripts/setup``). As root it builds two
network namespaces joined by a veth pair (10.88.0.1/24 <-> 10.88.0.2/24) and measures three
tunnels (10.99.0.1/24 <-> 10.99.0.2/24, MTU 1280) across it:

1. ``reference``: wireguard-go in both namespaces;
2. ``wgactors``: ``scripts/wgactors up`` in namespace a, wireguard-go in b;
3. ``wgactors-single``: the same with ``--single-threaded``.

Each of ``--rounds`` rounds runs every case once, round-robin, so that machine noise hits all
cases alike; every case run starts fresh tunnel ends and measures, from namespace a:

* iperf3 TCP upload and download (``-t SECONDS``, the receiver's bits per second);
* UDP packets per second with small packets (``iperf3 -u -l 64 -b 0``, upload; the packets
  the receiver got, per second);
* ping latency (``ping -c 20 -i 0.05``, average rtt), idle and while a TCP upload runs;
* the a end's peak RSS (VmHWM) and CPU time (utime + stime, as % of one core over the wall
  time of the measurements) from ``/proc``.

It prints the median of the rounds with min and max, the ratios to the reference, and
PASS/MISS for each target. A MISS does not change the exit status: 0 when every measurement
worked, 1 when something broke (the failures are listed), 130 when interrupted. Everything it
created is removed on the way out, also on Ctrl-C or SIGTERM; no traffic leaves its own
namespaces. The tunnel machinery comes from ``scripts/demo.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo  # scripts/demo.py: the lab, the tunnel ends
from demo import (
    IPERF_PORT,
    TUNNEL_A,
    TUNNEL_B,
    DemoError,
    Lab,
    Proc,
    preflight,
    raise_interrupt,
    run,
)

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

QUICK_SECONDS, QUICK_ROUNDS = 1, 1

CASES: dict[str, tuple[str, list[str] | None]] = {
    "reference": ("wireguard-go ↔ wireguard-go", None),
    "wgactors": ("wgactors ↔ wireguard-go", []),
    "wgactors-single": ("wgactors --single-threaded ↔ wireguard-go", ["--single-threaded"]),
}
CASE_ALIASES = {"ref": "reference", "actors": "wgactors", "single": "wgactors-single"}

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
)

TARGET_UPDOWN_RATIO = 0.5
TARGET_ACTORS_VS_SINGLE = 1.3
TARGET_RSS_MB = 80.0
TARGET_ADDED_LATENCY_MS = 0.3


# --------------------------------------------------------------------------- /proc


def _read(path: str) -> str | None:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _children() -> dict[int, list[int]]:
    """PPID -> child PIDs, for every process still there to read."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if stat is None:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1].isdigit():
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def find_process(root: int, match: Callable[[int, list[str]], bool]) -> int | None:
    """The first process, ``root`` or one of its descendants, whose command line matches."""
    tree = _children()
    queue, seen = [root], set()
    while queue and len(seen) < 1000:
        pid = queue.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        if match(pid, _cmdline(pid)):
            return pid
        queue.extend(tree.get(pid, []))
    return None


def is_wgactors_python(pid: int, argv: list[str]) -> bool:
    """The Python interpreter running ``-m actors.cli`` (not the bash launcher, not ``ip``)."""
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return False
    return exe.startswith("python") and "actors.cli" in argv


def is_wireguard_go(_pid: int, argv: list[str]) -> bool:
    return bool(argv) and os.path.basename(argv[0]) == "wireguard-go"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the whole process (all its threads), in seconds."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # fields[0] is field 3 (state)
    try:
        ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime
    except (IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    status = _read(f"/proc/{pid}/status")
    if status and (m := re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.M)):
        return int(m.group(1)) / 1024
    return None


# --------------------------------------------------------------------------- measurements


def ping_avg(lab: Lab, target: str, count: int = PING_COUNT) -> tuple[float, float]:
    """Average rtt (ms) and loss (%) of ``count`` pings from a; DemoError if none came back."""
    deadline = int(count * PING_INTERVAL + 10)
    argv = ["ping", "-n", "-q", "-c", count, "-i", PING_INTERVAL, "-W", 2, "-w", deadline]
    res = lab.exec(lab.ns_a, *argv, target, timeout=deadline + 5, check=False)
    m = re.search(r"= [\d.]+/([\d.]+)/", res.stdout)
    if m is None:
        lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
        raise DemoError(f"ping {target}: {lines[-1] if lines else f'exit {res.returncode}'}")
    loss = re.search(r"([\d.]+)% packet loss", res.stdout)
    return float(m.group(1)), float(loss.group(1)) if loss else 0.0


def _start_quiet(lab: Lab, ns: str, name: str, *argv: Any) -> tuple[Proc, Path]:
    """Like ``lab.start`` (so ``lab.close`` stops it), but stdout apart from stderr."""
    log, out = lab.tmp / f"{name}.log", lab.tmp / f"{name}.out"
    with open(out, "wb") as fh_out, open(log, "wb") as fh_log:
        popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, *(str(a) for a in argv)],
            stdin=subprocess.DEVNULL,
            stdout=fh_out,
            stderr=fh_log,
            start_new_session=True,
        )
    proc = Proc(name, popen, log)
    lab.procs.append(proc)
    return proc, out


def iperf3(
    lab: Lab, name: str, seconds: int, *extra: Any, during: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """One iperf3 run from a to b (server in b); its JSON report. ``during`` runs meanwhile."""
    server = demo.start_iperf_server(lab, f"{name}-server", "-Hln")
    client: Proc | None = None
    try:
        argv = ["iperf3", "-c", TUNNEL_B, "-p", IPERF_PORT, "-t", seconds, "-J"]
        client, out = _start_quiet(
            lab, lab.ns_a, f"{name}-client", *argv, "--connect-timeout", 3000, *extra
        )
        if during is not None:
            during()
        try:
            client.popen.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            raise DemoError(f"iperf3 {name} did not finish within {seconds + 30} s") from None
        text = out.read_text(errors="replace")
        try:
            report = json.loads(text)
        except json.JSONDecodeError:
            detail = (demo.tail(client.log, 5) or text[-300:]).strip()
            raise DemoError(
                f"iperf3 {name} printed no JSON (exit {client.popen.returncode}): {detail}"
            ) from None
        if report.get("error"):
            raise DemoError(f"iperf3 {name}: {report['error']}")
        if client.popen.returncode != 0:
            raise DemoError(f"iperf3 {name} exited with {client.popen.returncode}")
        return report
    finally:
        if client is not None:
            lab.stop(client, grace=2.0)
        lab.stop(server, grace=2.0)


def tcp_mbps(report: dict[str, Any]) -> float:
    try:
        bps = float(report["end"]["sum_received"]["bits_per_second"])
    except (KeyError, TypeError, ValueError):
        raise DemoError("iperf3 JSON has no end.sum_received.bits_per_second") from None
    if bps <= 0:
        raise DemoError("iperf3: nothing received")
    return bps / 1e6


def udp_received_pps(report: dict[str, Any]) -> tuple[float, float]:
    """(received, sent) packets per second of a UDP run, from the receiver's figures."""
    end = report.get("end", {})
    recv = end.get("sum_received") or end.get("sum") or {}
    sent = end.get("sum_sent") or end.get("sum") or {}
    try:
        got = int(recv["packets"]) - int(recv["lost_packets"])
        seconds = float(recv["seconds"])
        sent_pps = int(sent["packets"]) / float(sent["seconds"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        raise DemoError("iperf3 UDP JSON has no end.sum_received packets/lost_packets") from None
    if got <= 0 or seconds <= 0:
        raise DemoError(f"iperf3 UDP: {got} packets received")
    return got / seconds, sent_pps


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


def wgactors_status(iface: str) -> dict[str, Any] | None:
    """``scripts/wgactors status IFACE --json`` (per-stage counters), or None."""
    with contextlib.suppress(Exception):
        res = run([demo.LAUNCHER, "status", iface, "--json"], timeout=STATUS_TIMEOUT, check=False)
        if res.returncode == 0:
            return json.loads(res.stdout)
    return None


def run_case(
    lab: Lab,
    case: str,
    round_no: int,
    serial: int,
    keys: dict[str, tuple[str, str]],
    seconds: int,
) -> RunResult:
    """Start both ends of one case, measure, stop them; failures go into the result."""
    result = RunResult(case, round_no)
    wgactors_args = CASES[case][1]
    (priv_a, pub_a), (priv_b, pub_b) = keys["a"], keys["b"]
    iface_a, iface_b = f"{PREFIX}{lab.tag}{serial}a", f"{PREFIX}{lab.tag}{serial}b"
    endpoint_a, endpoint_b = (
        f"{demo.UNDERLAY_A}:{demo.WG_PORT}",
        f"{demo.UNDERLAY_B}:{demo.WG_PORT}",
    )
    started: list[tuple[str, str, Proc]] = []
    logs: list[Path] = []

    def step(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except DemoError as e:
            result.errors.append(f"{name}: {e}")
            if e.log is not None and e.log not in logs:
                logs.append(e.log)
        time.sleep(SETTLE)

    try:
        b = demo.start_wireguard_go(
            lab, lab.ns_b, iface_b, priv_b, pub_a, TUNNEL_B, TUNNEL_A, endpoint_a
        )
        started.append((lab.ns_b, iface_b, b))
        if wgactors_args is None:
            a = demo.start_wireguard_go(
                lab, lab.ns_a, iface_a, priv_a, pub_b, TUNNEL_A, TUNNEL_B, endpoint_b
            )
            match = is_wireguard_go
        else:
            a = demo.start_wgactors(
                lab, lab.ns_a, iface_a, priv_a, pub_b, *wgactors_args, verbose=False
            )
            match = is_wgactors_python
        started.append((lab.ns_a, iface_a, a))
        logs += [a.log, b.log]

        pid = None
        deadline = time.monotonic() + PROC_FIND_TIMEOUT
        while (pid := find_process(a.popen.pid, match)) is None:
            if a.popen.poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"cannot find the a end's process under PID {a.popen.pid}", a.log)
            time.sleep(0.05)
        result.extra["pid"] = pid

        for attempt in range(1, WARMUP_TRIES + 1):  # the handshake, not measured
            try:
                ping_avg(lab, TUNNEL_B, count=1)
                break
            except DemoError:
                if attempt == WARMUP_TRIES or a.popen.poll() is not None:
                    raise DemoError("no ping through the tunnel (handshake?)", a.log) from None

        cpu0, t0 = cpu_seconds(pid), time.monotonic()

        def idle() -> None:
            rtt, loss = ping_avg(lab, TUNNEL_B)
            result.metrics["ping_idle_ms"] = rtt
            result.extra["ping_idle_loss_pct"] = loss

        def tcp(direction: str, *extra: str) -> Callable[[], None]:
            def go() -> None:
                report = iperf3(lab, f"tcp-{direction}-{serial}", seconds, *extra)
                result.metrics[f"tcp_{direction}_mbps"] = tcp_mbps(report)

            return go

        def loaded() -> None:
            found: dict[str, Any] = {}

            def ping_meanwhile() -> None:
                time.sleep(LOADED_RAMP)
                try:
                    found["ping"] = ping_avg(lab, TUNNEL_B)
                except DemoError as e:
                    found["error"] = e

            up_seconds = max(seconds, LOADED_MIN_SECONDS)
            report = iperf3(lab, f"loaded-{serial}", up_seconds, during=ping_meanwhile)
            if "error" in found:
                raise found["error"]
            result.metrics["ping_loaded_ms"] = found["ping"][0]
            result.extra["ping_loaded_loss_pct"] = found["ping"][1]
            result.extra["loaded_tcp_up_mbps"] = tcp_mbps(report)

        def udp() -> None:
            report = iperf3(lab, f"udp-{serial}", seconds, "-u", "-l", UDP_LEN, "-b", 0)
            got, sent = udp_received_pps(report)
            result.metrics["udp_pps"] = got
            result.extra["udp_sent_pps"] = sent

        step("ping idle", idle)
        step("TCP upload", tcp("up"))
        step("TCP download", tcp("down", "-R"))
        step("ping under load", loaded)
        step("UDP pps", udp)

        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        rss = peak_rss_mb(pid)
        if a.popen.poll() is not None:
            result.errors.append(f"the a end exited with {a.popen.returncode} while measured")
        if cpu0 is not None and cpu1 is not None and t1 > t0:
            result.metrics["cpu_pct"] = 100 * (cpu1 - cpu0) / (t1 - t0)
            result.extra["cpu_s"], result.extra["wall_s"] = cpu1 - cpu0, t1 - t0
        if rss is not None:
            result.metrics["rss_mb"] = rss
        elif wgactors_args is not None:
            result.errors.append(f"could not read VmHWM of PID {pid}")
        if wgactors_args is not None:
            result.extra["status"] = wgactors_status(iface_a)
        # What wireguard-go in b counted for its peer: the traffic did go through the tunnel.
        rx, tx = demo.peer_transfer(lab, iface_b)
        if rx is not None:
            result.extra["b_rx_bytes"], result.extra["b_tx_bytes"] = rx, tx
        up, down = result.metrics.get("tcp_up_mbps"), result.metrics.get("tcp_down_mbps")
        if up is not None and down is not None:
            result.metrics["tcp_sum_mbps"] = up + down
    except DemoError as e:
        result.errors.append(f"setting up: {e}")
        if e.log is not None and e.log not in logs:
            logs.append(e.log)
    finally:
        status = demo.stop_ends(lab, started)
        if status is not None:  # wgactors was started
            result.extra["exit_status"] = status
            if status != 0:
                result.errors.append(f"wgactors exited with {status} on SIGTERM")
        if result.errors:
            result.extra["log_tails"] = {log.name: demo.tail(log) for log in logs}
    return result


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


def compute_ratios(summary: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    med = {case: s["median"] for case, s in summary.items()}
    ref = med.get("reference", {})
    out: dict[str, Any] = {}
    for case in ("wgactors", "wgactors-single"):
        m = med.get(case)
        if m is None:
            continue
        idle, ref_idle = m.get("ping_idle_ms"), ref.get("ping_idle_ms")
        out[case] = {
            "up_vs_reference": ratio(m.get("tcp_up_mbps"), ref.get("tcp_up_mbps")),
            "down_vs_reference": ratio(m.get("tcp_down_mbps"), ref.get("tcp_down_mbps")),
            "updown_vs_reference": ratio(m.get("tcp_sum_mbps"), ref.get("tcp_sum_mbps")),
            "pps_vs_reference": ratio(m.get("udp_pps"), ref.get("udp_pps")),
            "added_idle_latency_ms": (
                idle - ref_idle if idle is not None and ref_idle is not None else None
            ),
            "peak_rss_mb": m.get("rss_mb"),
        }
    out["actors_vs_single_updown"] = ratio(
        med.get("wgactors", {}).get("tcp_sum_mbps"),
        med.get("wgactors-single", {}).get("tcp_sum_mbps"),
    )
    return out


def check_targets(
    ratios: dict[str, Any], summary: dict[str, dict[str, dict[str, float]]]
) -> list[dict[str, Any]]:
    actors = ratios.get("wgactors", {})
    rss_values = [
        summary[c]["max"]["rss_mb"]
        for c in ("wgactors", "wgactors-single")
        if c in summary and "rss_mb" in summary[c]["max"]
    ]
    rss = max(rss_values) if rss_values else None
    targets = [
        (
            "wgactors ↔ wireguard-go up+down ≥ 0.5x reference",
            actors.get("updown_vs_reference"),
            lambda v: v >= TARGET_UPDOWN_RATIO,
            "{:.2f}x",
        ),
        (
            "actors ≥ 1.3x single-threaded (up+down)",
            ratios.get("actors_vs_single_updown"),
            lambda v: v >= TARGET_ACTORS_VS_SINGLE,
            "{:.2f}x",
        ),
        (
            "peak RSS ≤ 80 MB (highest of any round, both wgactors modes)",
            rss,
            lambda v: v <= TARGET_RSS_MB,
            "{:.1f} MB",
        ),
        (
            "added idle latency ≤ 0.3 ms (wgactors - reference)",
            actors.get("added_idle_latency_ms"),
            lambda v: v <= TARGET_ADDED_LATENCY_MS,
            "{:+.3f} ms",
        ),
    ]
    out = []
    for name, value, ok, fmt in targets:
        status = "SKIP" if value is None else ("PASS" if ok(value) else "MISS")
        shown = "not measured" if value is None else fmt.format(value)
        out.append({"target": name, "value": value, "status": status, "shown": shown})
    return out


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def print_report(
    cases: Sequence[str],
    summary: dict[str, dict[str, dict[str, float]]],
    ratios: dict[str, Any],
    targets: list[dict[str, Any]],
    rounds: int,
    seconds: int,
) -> None:
    print(f"\nMedian of {rounds} round(s) per case, [min .. max] below it")
    head = ["", *(c for c in cases)]
    rows: list[list[str]] = [head]
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
    demo.print_rows(rows)

    wg_cases = [c for c in ("wgactors", "wgactors-single") if c in ratios]
    if wg_cases:
        print("\nRatios (from the medians above)")
        rrows = [["", *wg_cases]]
        for key, label, spec in (
            ("up_vs_reference", "TCP upload / reference", "{:.2f}x"),
            ("down_vs_reference", "TCP download / reference", "{:.2f}x"),
            ("updown_vs_reference", "TCP up+down / reference", "{:.2f}x"),
            ("pps_vs_reference", "UDP pkt/s / reference", "{:.2f}x"),
            ("added_idle_latency_ms", "idle latency added over reference", "{:+.3f} ms"),
            ("peak_rss_mb", "peak RSS", "{:.1f} MB"),
        ):
            rrows.append([label, *(fmt(ratios[c].get(key), spec) for c in wg_cases)])
        demo.print_rows(rrows)
    print(
        "actors / single-threaded (TCP up+down): "
        + fmt(ratios.get("actors_vs_single_updown"), "{:.2f}x")
    )
    print(
        f"\n(a = {TUNNEL_A}, b = {TUNNEL_B}; iperf3 TCP {seconds} s per direction, UDP upload "
        f"-l {UDP_LEN} -b 0 for {seconds} s;\n ping -c {PING_COUNT} -i {PING_INTERVAL} a→b, idle "
        f"and {LOADED_RAMP:g} s into a ≥{LOADED_MIN_SECONDS} s TCP upload;\n RSS = VmHWM, CPU = "
        "utime+stime of the a end's process over its measurements' wall time)"
    )
    print("\nTargets")
    for t in targets:
        print(f"  {t['status']:4}  {t['target']}: {t['shown']}")


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    wg_version = "?"
    with contextlib.suppress(Exception):
        res = run(["wireguard-go", "--version"], timeout=5, check=False)
        lines = (res.stdout or res.stderr).strip().splitlines()
        wg_version = lines[0] if lines else "?"
    iperf_version = "?"
    with contextlib.suppress(Exception):
        res = run(["iperf3", "--version"], timeout=5, check=False)
        iperf_version = (res.stdout.strip().splitlines() or ["?"])[0]
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": m.group(1).strip() if m else platform.processor() or "?",
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "wireguard_go": wg_version,
        "iperf3": iperf_version,
        "loadavg": os.getloadavg(),
    }


def print_machine(info: dict[str, Any]) -> None:
    load = " ".join(f"{x:.2f}" for x in info["loadavg"])
    print(f"machine: nproc {info['nproc']} (usable {info['usable_cpus']}), {info['cpu_model']}")
    print(f"         kernel {info['kernel']}, {info['python']}, {info['wireguard_go']}")
    print(f"         {info['iperf3']}; load average at start {load}", flush=True)


# --------------------------------------------------------------------------- main


def parse_cases(text: str) -> list[str]:
    chosen: list[str] = []
    for word in text.replace(",", " ").split():
        key = CASE_ALIASES.get(word, word)
        if key not in CASES:
            names = ", ".join([*CASES, *CASE_ALIASES])
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
    parser.add_argument(
        "--cases",
        type=parse_cases,
        default=list(CASES),
        metavar="LIST",
        help="comma-separated subset of: reference (ref), wgactors (actors), "
        "wgactors-single (single); default all three",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ROUNDS} round, {QUICK_SECONDS} s each"
    )
    parser.add_argument("--json", metavar="PATH", help="write every figure as JSON")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = preflight("bench")
    if reason:
        print(f"bench: {reason}", file=sys.stderr)
        return 1
    info = machine_info()
    print_machine(info)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupt)
    lab = Lab(prefix=PREFIX)
    runs: dict[str, list[RunResult]] = {c: [] for c in args.cases}
    errors: list[str] = []
    started = time.monotonic()
    status = 1
    try:
        print(f"bench: namespaces {lab.ns_a} and {lab.ns_b}, temp dir {lab.tmp}", flush=True)
        lab.create()
        if args.peers:
            return _hub(lab, args, started)
        keys = {"a": demo.wg_keypair(), "b": demo.wg_keypair()}
        serial = 0
        for round_no in range(1, args.rounds + 1):
            for case in args.cases:
                serial += 1
                print(f"bench: round {round_no}/{args.rounds}: {CASES[case][0]} ...", flush=True)
                r = run_case(lab, case, round_no, serial, keys, args.seconds)
                runs[case].append(r)
                shown = ", ".join(
                    f"{key} {spec.format(r.metrics[key])}"
                    for key, _, spec in METRICS
                    if key in r.metrics and key != "tcp_sum_mbps"
                )
                print(f"         {shown or 'no figures'}", flush=True)
                for e in r.errors:
                    errors.append(f"round {round_no}, {case}: {e}")
                    print(f"         FAILED: {e}", flush=True)
        summary = {c: summarize(runs[c]) for c in args.cases}
        ratios = compute_ratios(summary)
        targets = check_targets(ratios, summary)
        print_report(args.cases, summary, ratios, targets, args.rounds, args.seconds)
        ok = not errors
        if args.json:
            report = {
                "ok": ok,
                "statistic": "median",
                "settings": {
                    "seconds": args.seconds,
                    "rounds": args.rounds,
                    "quick": args.quick,
                    "cases": args.cases,
                    "ping_count": PING_COUNT,
                    "ping_interval_s": PING_INTERVAL,
                    "udp_len": UDP_LEN,
                    "mtu": demo.MTU,
                },
                "machine": info,
                "namespaces": [lab.ns_a, lab.ns_b],
                "cases": {
                    c: {
                        "label": CASES[c][0],
                        "rounds": [r.to_json() for r in runs[c]],
                        **summary[c],
                    }
                    for c in args.cases
                },
                "ratios": ratios,
                "targets": targets,
                "errors": errors,
            }
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        for case in args.cases:
            for r in runs[case]:
                for name, text in r.extra.get("log_tails", {}).items():
                    print(f"\nlast lines of {name} (round {r.round}, {case}):")
                    for line in (text or "(empty)").splitlines():
                        print(f"    {line}")
        verdict = "all measurements worked" if ok else f"{len(errors)} measurement(s) failed"
        print(f"\nbench: {verdict} ({time.monotonic() - started:.0f} s)")
        status = 0 if ok else 1
    except KeyboardInterrupt as e:
        print(f"\nbench: interrupted ({e or 'SIGINT'}); cleaning up", file=sys.stderr)
        status = 130
    except DemoError as e:
        print(f"\nbench: {e}", file=sys.stderr)
        if e.log is not None:
            print(demo.tail(e.log), file=sys.stderr)
        status = 1
    finally:
        # Clean-up is bounded in time; don't let a second Ctrl-C cut it short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        lab.close()
    return status


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
