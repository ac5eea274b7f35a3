"""A live tunnel demo: wgactors against the reference wireguard-go, in network namespaces.

Run through ``sudo scripts/demo`` (which first runs ``scripts/setup``). As root it builds two
network namespaces joined by a veth pair (10.88.0.1/24 <-> 10.88.0.2/24) and, in turn, runs
three tunnels (10.99.0.1 <-> 10.99.0.2) across it:

1. reference: wireguard-go in both namespaces;
2. wgactors (``scripts/wgactors up``) in namespace a, wireguard-go in b;
3. the same with ``--single-threaded``.

For each it pings both ways and measures TCP throughput with iperf3 in both directions, then
prints a table comparing the wgactors cases with the reference. Every wait is bounded, and
everything it created (processes, namespaces, temp files) is removed on the way out, also on
Ctrl-C or SIGTERM. No traffic leaves its own namespaces.

Exit status: 0 when every ping and transfer succeeded, 1 otherwise (the failures and the
tail of the relevant log are printed), 130 when interrupted.

The namespaces, tunnel ends and traffic come from the lab (``actors.lab``), which the tests,
``scripts/bench`` and ``scripts/soak`` share.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from actors.lab import (
    TUNNEL_A,
    TUNNEL_B,
    Keys,
    Lab,
    LabError,
    PingResult,
    iperf3,
    ping,
    preflight,
    print_rows,
    tail,
    tcp_mbps,
)
from actors.lab.command import LOG_TAIL_LINES
from actors.lab.signals import interruptible
from actors.lab.signals import raise_interrupt as raise_interrupt  # older callers import it here

DemoError = LabError  # the name scripts/bench.py and older callers used
PING_COUNT = 3
PING_INTERVAL = 0.2  # seconds


# --------------------------------------------------------------------------- measurements


@dataclass
class CaseResult:
    key: str
    label: str
    ping_ab: PingResult | None = None
    ping_ba: PingResult | None = None
    upload_mbps: float | None = None
    download_mbps: float | None = None
    upload_ratio: float | None = None
    download_ratio: float | None = None
    failures: list[str] = field(default_factory=list)
    log_tails: dict[str, str] = field(default_factory=dict)
    exit_status: int | None = None  # of wgactors after SIGTERM
    # What wireguard-go in b counted for its peer: proof the traffic went through the tunnel.
    b_rx_bytes: int | None = None
    b_tx_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


def measure(lab: Lab, result: CaseResult, seconds: int) -> None:
    """Ping both ways, then an iperf3 TCP upload and download from a."""
    for attr, ns, target in (("ping_ab", lab.a, TUNNEL_B), ("ping_ba", lab.b, TUNNEL_A)):
        p = ping(ns, target, PING_COUNT, PING_INTERVAL)
        setattr(result, attr, p)
        if not p.ok:
            arrow = "a→b" if attr == "ping_ab" else "b→a"
            result.failures.append(f"ping {arrow} ({target}) failed: {p.error}")
    for attr, extra in (("upload_mbps", ()), ("download_mbps", ("-R",))):
        direction = "download" if extra else "upload"
        try:
            report = iperf3(
                lab.a, lab.b, TUNNEL_B, seconds, *extra, workdir=lab.tmp, name=f"iperf3-{direction}"
            )
            setattr(result, attr, tcp_mbps(report))
        except LabError as e:
            result.failures.append(f"{direction}: {e}")
            if e.log is not None:
                result.log_tails[e.log.name] = tail(e.log)


def run_case(
    lab: Lab,
    result: CaseResult,
    index: int,
    keys: Keys,
    seconds: int,
    wgactors_args: Sequence[str] | None,
) -> None:
    """One case: start both ends, measure, stop both ends (errors go into ``result``)."""
    tunnel = None
    try:
        tunnel = lab.tunnel(index, keys, wgactors_args)
        measure(lab, result, seconds)
        rx_tx = tunnel.b_end.transfer()
        if rx_tx is not None:
            result.b_rx_bytes, result.b_tx_bytes = rx_tx
    except LabError as e:
        result.failures.append(f"setting up: {e}")
    finally:
        if tunnel is None and lab.tunnels:
            tunnel = lab.tunnels[-1]  # it failed while starting
        if tunnel is not None:
            logs = tunnel.logs() if result.failures else {}
            result.exit_status = lab.stop_tunnel(tunnel)
            for name, text in logs.items():
                result.log_tails.setdefault(name, "\n".join(text.splitlines()[-LOG_TAIL_LINES:]))


# --------------------------------------------------------------------------- report


def fmt_ping(p: PingResult | None) -> str:
    if p is None:
        return "-"
    if not p.ok:
        return "FAIL"
    return f"ok {p.rtt_avg_ms:.2f} ms" if p.rtt_avg_ms is not None else "ok"


def fmt_num(v: float | None, suffix: str = "") -> str:
    return "-" if v is None else f"{v:.1f}{suffix}"


def fmt_ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def print_table(results: Sequence[CaseResult]) -> None:
    head = (
        "case",
        "ping a→b",
        "ping b→a",
        "upload Mbit/s",
        "download Mbit/s",
        "up/ref",
        "down/ref",
    )
    rows = [head] + [
        (
            r.label,
            fmt_ping(r.ping_ab),
            fmt_ping(r.ping_ba),
            fmt_num(r.upload_mbps),
            fmt_num(r.download_mbps),
            fmt_ratio(r.upload_ratio),
            fmt_ratio(r.download_ratio),
        )
        for r in results
    ]
    print_rows(rows)


def to_json(results: Sequence[CaseResult], seconds: int, quick: bool, ok: bool) -> dict[str, Any]:
    cases = {}
    for r in results:
        d = asdict(r)
        d.pop("log_tails")
        d["ok"] = r.ok
        cases[r.key] = d
    return {"ok": ok, "quick": quick, "seconds": seconds, "cases": cases}


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Live tunnel demo: wgactors against wireguard-go in network namespaces.",
    )
    parser.add_argument(
        "--seconds", type=int, default=3, metavar="N", help="iperf3 seconds per direction (3)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="wgactors cases only, 1 s per direction"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 1
    if not 1 <= args.seconds <= 600:
        parser.error("--seconds must be 1..600")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = preflight()
    if reason:
        print(f"demo: {reason}", file=sys.stderr)
        return 1
    cases: list[tuple[str, str, list[str] | None]] = [
        ("reference", "wireguard-go ↔ wireguard-go", None),
        ("wgactors", "wgactors ↔ wireguard-go", []),
        ("wgactors-single", "wgactors --single-threaded ↔ wireguard-go", ["--single-threaded"]),
    ]
    if args.quick:
        cases = cases[1:]
    lab = Lab()
    results: list[CaseResult] = []
    started = time.monotonic()
    try:
        with interruptible():  # on the way out the signals are ignored: clean-up runs whole
            return run_demo(args, lab, cases, results, started)
    except KeyboardInterrupt as e:
        print(f"\ndemo: interrupted ({e or 'SIGINT'}); cleaning up", file=sys.stderr)
        return 130
    except LabError as e:
        print(f"\ndemo: {e}", file=sys.stderr)
        if e.log is not None:
            print(tail(e.log), file=sys.stderr)
        return 1
    finally:
        lab.close()


def run_demo(
    args: argparse.Namespace,
    lab: Lab,
    cases: Sequence[tuple[str, str, list[str] | None]],
    results: list[CaseResult],
    started: float,
) -> int:
    """Run the cases in turn, print the table and write the JSON; the exit status."""
    print(f"demo: namespaces {lab.ns_a} and {lab.ns_b}, temp dir {lab.tmp}", flush=True)
    lab.create()
    keys = Keys.fresh()
    for index, (key, label, wgactors_args) in enumerate(cases, start=1):
        print(f"demo: case {index}/{len(cases)}: {label} ...", flush=True)
        result = CaseResult(key, label)
        results.append(result)
        run_case(lab, result, index, keys, args.seconds, wgactors_args)
    ref = next((r for r in results if r.key == "reference"), None)
    for r in results:
        if ref is None or r is ref:
            continue
        if r.upload_mbps is not None and ref.upload_mbps:
            r.upload_ratio = r.upload_mbps / ref.upload_mbps
        if r.download_mbps is not None and ref.download_mbps:
            r.download_ratio = r.download_mbps / ref.download_mbps
    ok = all(r.ok for r in results)
    print()
    print_table(results)
    print(
        f"\n(a = {TUNNEL_A}, b = {TUNNEL_B}; ping -c 3, the first ping a→b includes the "
        f"handshake; iperf3 TCP, {args.seconds} s per direction, from a)"
    )
    for r in results:
        if r.exit_status not in (None, 0):
            print(f"note: {r.label}: wgactors exited with {r.exit_status} on SIGTERM")
    if args.json:
        Path(args.json).write_text(
            json.dumps(to_json(results, args.seconds, args.quick, ok), indent=2) + "\n"
        )
    for r in results:
        if r.ok:
            continue
        print(f"\nFAILED: {r.label}")
        for f in r.failures:
            print(f"  - {f}")
        for name, text in r.log_tails.items():
            print(f"  last {LOG_TAIL_LINES} lines of {name}:")
            for line in (text or "(empty)").splitlines():
                print(f"    {line}")
    verdict = "all pings and transfers succeeded" if ok else "some checks failed"
    print(f"\ndemo: {verdict} ({time.monotonic() - started:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
